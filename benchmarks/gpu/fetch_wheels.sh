#!/usr/bin/env bash
# Wheels for the lent GPU machine (device tool; Python 3.12, x86-64, no network there). Its image
# has JAX (CUDA), flax, optax, orbax, numpy, scipy, pandas, matplotlib, tqdm, numba, … but not
# Hydra/OmegaConf, ASE, tensorboardX or abTEM and its dask/zarr stack. Run here, in the repo
# root, once per session; `.whl/` is git-ignored locally and travels with `carry: [".whl"]`.
#   bash benchmarks/gpu/fetch_wheels.sh
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
mkdir -p .whl
plat=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64
      --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64
      --platform manylinux1_x86_64 --platform manylinux_2_24_x86_64)
# pure-Python or binary wheels, pinned to what the CPU test suite runs with
pkgs=(hydra-core==1.3.8 omegaconf==2.3.1 ase==3.29.0 tensorboardX==2.6.5
      abtem==1.0.11 dask==2026.8.0 distributed==2026.8.0 zarr==3.1.6 numcodecs==0.16.6
      donfig==0.8.1.post1 crc32c pyfftw==0.15.1 partd==1.4.2 locket==1.0.0 tornado==6.6.1
      tblib==3.2.2 zict==3.0.0)
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp "${plat[@]}" -d .whl "${pkgs[@]}"
# antlr4-python3-runtime 4.9.3 (Hydra's parser) is published as an sdist only: build its wheel
ls .whl/antlr4_python3_runtime-*.whl >/dev/null 2>&1 ||
    python3 -m pip wheel -q --no-deps -w .whl antlr4-python3-runtime==4.9.3
du -sh .whl && ls .whl
