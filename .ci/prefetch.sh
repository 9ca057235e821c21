#!/usr/bin/env bash
# The Python test venv's downloads and the compute network's model, for
# .ci/run, which starts this in the background (in its own process group)
# while clippy and the first build keep both cores busy. Network- and
# disk-bound. One at a time: a second run in the same checkout (say, after
# an earlier .ci/run was stopped) waits for the lock instead of installing
# into the same venv at once.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p target/ci-tools
exec 9>target/ci-tools/prefetch.lock
flock 9
py=target/ci-tools/py
# The test venv, cached under target/.
if [ ! -x "$py/bin/pytest" ] || [ ! -x "$py/bin/maturin" ]; then
  python3 -m venv "$py"
  "$py/bin/pip" install --quiet --disable-pip-version-check "maturin==1.16.0" "numpy==2.4.6" "pytest==8.4.2"
fi
# PyTorch for the torch path's tests and the CNN example: PyPI's Linux wheel
# with its CUDA libraries (download.pytorch.org's CPU-only index is not
# reachable here), about 6 GB once, then cached in the venv. One wheel at a
# time and without triton (.ci/install_torch.py says why): a plain pip
# install holds every archive and every installed file at once, about 11 GB,
# and ran a CI machine out of disk.
if ! "$py/bin/python" -c "import torch" >/dev/null 2>&1; then
  "$py/bin/python" .ci/install_torch.py 2.9.1
fi
# safetensors' own writer, for the interop test (a 0.5 MB wheel).
if ! "$py/bin/python" -c "import safetensors" >/dev/null 2>&1; then
  "$py/bin/pip" install --quiet --disable-pip-version-check "safetensors==0.7.0"
fi
# Meta-World (MuJoCo, gymnasium) for the robot fleet's test: real physics.
if ! "$py/bin/python" -c "import metaworld" >/dev/null 2>&1; then
  "$py/bin/pip" install --quiet --disable-pip-version-check "metaworld==3.1.1" "packaging"
fi
bash scripts/compute/fetch_models.sh
