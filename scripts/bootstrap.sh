#!/usr/bin/env bash
# Create (or refresh) the project's virtual environment in .venv from requirements.lock.
# Idempotent: does nothing when .venv already matches the lock file, so every README command can call it.
# --test also makes sure the test suite's system tool is present: headless Chromium (renders the report).
set -euo pipefail
if [[ "${1:-}" == "--test" ]] && ! command -v chromium >/dev/null; then
    echo "[bootstrap] installing chromium for the report-rendering test" >&2
    if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
        (apt-get update -qq && apt-get install -y -qq chromium) >/dev/null 2>&1 \
            || echo "[bootstrap] could not install chromium; the report-rendering test will fail" >&2
    else
        echo "[bootstrap] not root or no apt-get: install chromium yourself for the report test" >&2
    fi
fi
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv"
stamp="$venv/.lock-sha256"
want="$(sha256sum "$root/requirements.lock" | cut -d' ' -f1)"
if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
    exit 0
fi
echo "[bootstrap] installing the pinned environment into $venv (first run only; a few minutes)" >&2
python3 -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --upgrade pip >&2 2>/dev/null || true
"$venv/bin/python" -m pip install --quiet -r "$root/requirements.lock" 2>&1 \
    | grep -v "is ignored: it is neither a file nor a directory" >&2 || true
# pip's exit status is lost in the pipe above: verify the imports instead.
"$venv/bin/python" -c "import torch, torchaudio, transformers, parselmouth, h5py, polars, typer, soundfile, safetensors, matplotlib, onnx, onnxruntime, opensmile" \
    || { echo "[bootstrap] the environment is incomplete; see pip's messages above" >&2; exit 1; }
echo "$want" > "$stamp"
