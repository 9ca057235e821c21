"""The native module (Rust). Use the package's public API instead."""

from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

Wire = Tuple[str, List[int], bytes]

__version__: str

def simulate(
    job: str,
    initial: Sequence[Wire],
    clients: Sequence[Any],
    evaluate: Optional[Callable[[List[Wire]], Tuple[float, Optional[float]]]] = None,
    data_dir: Optional[str] = None,
    on_round: Optional[Callable[[str], None]] = None,
    strategy: Optional[Any] = None,
) -> Tuple[str, List[Wire]]: ...
def digits(
    partition_id: int, num_partitions: int, partition: str = "iid", seed: int = 0
) -> Tuple[Wire, List[int], Wire, List[int]]: ...
def read_safetensors(bytes: bytes) -> List[Wire]: ...
def write_safetensors(tensors: Sequence[Wire], dtypes: Optional[Dict[str, str]] = None) -> bytes: ...
def stored_model(sha256: str, data_dir: str) -> List[Wire]: ...
def edge_package(update: Sequence[Wire], examples: int, clip: float, tasks: str) -> bytes: ...
def read_edge_package(bytes: bytes) -> Tuple[List[Wire], Dict[str, str]]: ...

class NativeAgent:
    def __init__(
        self,
        client: Any,
        model: Sequence[Wire],
        *,
        coordinator: Optional[str],
        discover: bool,
        enroll: Optional[str],
        data_dir: str,
        key_file: Optional[str],
        passphrase: Optional[str],
        name: str,
        once: bool,
        seed: int,
        policy: Optional[str],
        allow_plaintext: bool,
        certificate: Optional[str],
        insecure: bool,
        listen: List[str],
        dataset: str,
        on_declined: Optional[Callable[[Any], None]],
        partition_id: Optional[int] = None,
    ) -> None: ...
    @property
    def peer_id(self) -> str: ...
    def status(self) -> str: ...
    def stop(self) -> None: ...
    def run(self) -> str: ...
