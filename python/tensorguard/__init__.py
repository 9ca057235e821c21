"""TensorGuard: private federated learning, with your own PyTorch or NumPy training loop.

The engine — sampling, secure aggregation (SecAgg+), differential privacy
and its accounting, the store — is Rust; your handlers do the training.

Example:
    >>> import numpy as np, tensorguard
    >>> app = tensorguard.ClientApp()
    >>> @app.train()
    ... def train(model, config, context):
    ...     return {k: v - 0.5 for k, v in model.items()}, 20
    >>> summary = tensorguard.simulation.run(app, num_clients=4, rounds=1,
    ...                                      initial_model={"w": np.ones(2)})
    >>> summary["status"]
    'completed'
"""

from . import datasets, edge, simulation
from .agent import Agent
from ._core import __version__
from .app import ClientApp, Context
from .errors import (
    AttestationError,
    ComputeError,
    ConfigError,
    DataError,
    InternalError,
    NetworkError,
    PrivacyError,
    RoundError,
    StoreError,
    TensorGuardError,
    TrustError,
)
from .models import load_model, save_model
from .edge import Demonstration, EdgeClient, Envelope
from .numpy_client import NumPyClient
from .strategy import FedMedian, Strategy

__all__ = [
    "__version__",
    "Agent",
    "EdgeClient",
    "Envelope",
    "Demonstration",
    "edge",
    "ClientApp",
    "Context",
    "NumPyClient",
    "Strategy",
    "FedMedian",
    "simulation",
    "datasets",
    "load_model",
    "save_model",
    "TensorGuardError",
    "ConfigError",
    "DataError",
    "StoreError",
    "TrustError",
    "PrivacyError",
    "NetworkError",
    "AttestationError",
    "ComputeError",
    "RoundError",
    "InternalError",
]
