"""Install PyTorch into CI's venv one wheel at a time, without triton.

PyPI's only Linux x86-64 build of torch is the CUDA one: torch itself plus
about 4 GB of nvidia-* wheels that its libraries link against (they are
needed to import torch, even on a machine without a GPU). A plain
`pip install torch` downloads every wheel before it installs any, so the
disk must hold all the archives and all the installed files at once
(about 11 GB). Installing them one at a time needs the installed files plus
the largest single archive. triton (0.6 GB) is left out: it serves only
torch.compile, which neither the SDK nor its tests use.

Usage: python .ci/install_torch.py VERSION   (run with the venv's python)
"""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys

from pip._vendor.packaging.requirements import Requirement

SKIP = {"triton"}


def pip(*args: str) -> None:
    """Run the venv's pip quietly, keeping no wheel cache.

    Conflict warnings are off: torch goes in first, so until the last of its
    requirements is in, pip would list the missing ones after every step.
    """
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
         "--no-cache-dir", "--no-warn-conflicts", *args],
        check=True,
    )


def main() -> None:
    """Install torch==VERSION, then each of its requirements in turn."""
    if len(sys.argv) != 2:
        sys.exit("error[E001]: usage: install_torch.py VERSION")
    pip("--no-deps", f"torch=={sys.argv[1]}")
    for line in importlib.metadata.requires("torch") or []:
        req = Requirement(line)
        if req.name in SKIP or (req.marker is not None and not req.marker.evaluate({"extra": ""})):
            continue
        # The nvidia-* wheels name each other as requirements; torch names
        # every one of them itself, so each goes in alone. Others (sympy,
        # jinja2, ...) are small and bring their own requirements.
        deps = ["--no-deps"] if req.name.startswith("nvidia-") else []
        pip(*deps, str(req))


if __name__ == "__main__":
    main()
