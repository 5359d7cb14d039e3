#!/usr/bin/env bash
# Wheels that benchmarks/gpu_check.py needs on a lent GPU machine and that its image lacks (it has torch,
# transformers, h5py, typer, rich, safetensors, matplotlib; it has no package registry). Run here, in the repo
# root; .whl/ is git-ignored and travels with `carry: [".whl"]` (64 MiB at most per call: polars 1.30's single
# wheel is 36 MB, where polars 2.x needs a 54 MB runtime wheel beside it, too much with parselmouth's 11 MB).
# Then, in the device command:
#   python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
#     && export PYTHONPATH=/tmp/site && PYTHONUNBUFFERED=1 timeout 540 python3 benchmarks/gpu_check.py \
#        --out /tmp/gpu_check --json $OUT/gpu_check.json 2>&1 | tee $OUT/gpu_check.log
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
mkdir -p .whl
for package in polars==1.30.0 praat-parselmouth==0.4.7 soundfile==0.14.0 cffi==2.1.1 pycparser==3.12; do
    python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl "$package"
done
du -sh .whl
