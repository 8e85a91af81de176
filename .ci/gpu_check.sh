#!/usr/bin/env bash
# The GPU check (issue 6), run on a lent GPU machine through the device tool, not by CI:
# CUDA tests in one process and on 2 MPI ranks sharing the GPU, the example on CUDA, and the
# single-process step benchmark against PyTorch CUDA. Wheels for mpi4py/mpich/pytest-mpi in .whl/.
set -u
OUT=${OUT:-/tmp/gpu-out}; mkdir -p "$OUT"
BASE_SITE=$(python3 -c 'import site; print(site.getsitepackages()[0])')  # the image's CuPy, NumPy, PyTorch
python3 -m venv /tmp/v && echo "$BASE_SITE" > "$(/tmp/v/bin/python -c 'import site; print(site.getsitepackages()[0])')/base.pth" \
  && /tmp/v/bin/python -m pip install -q --no-index --no-deps .whl/*.whl || exit 1
export PATH=/tmp/v/bin:$PATH PYTHONPATH=$PWD OPENBLAS_NUM_THREADS=1 PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
python -c "import cupy, ddpgrad; print('cupy', cupy.__version__, 'cuda available', ddpgrad.cuda.is_available())" | tee -a "$OUT/gpu.txt"
timeout 240 python -m pytest -q -p no:cacheprovider -o addopts="" tests/test_cuda.py 2>&1 | tail -25 | tee "$OUT/cuda_tests.log"
timeout 120 mpiexec -n 2 python -m pytest --with-mpi -q -p no:cacheprovider tests/mpi/test_ddp.py -k gpu 2>&1 | tail -6 | tee "$OUT/mpi_gpu.log"
timeout 120 mpiexec -n 2 python examples/train_mlp.py --device cuda --epochs 8 --lr 3e-3 --quiet 2>&1 | tail -4 | tee "$OUT/example_mpi_cuda.log"
timeout 120 python benchmarks/bench_gpu.py 2>&1 | tail -3 | tee "$OUT/bench_gpu.jsonl"
[ "${GPU_PROFILE:-0}" = 1 ] && timeout 120 python benchmarks/profile_gpu.py 2>&1 | head -60 | tee "$OUT/profile_gpu.txt"
