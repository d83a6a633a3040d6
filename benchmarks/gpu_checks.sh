#!/usr/bin/env bash
# Every GPU check in one run, for a machine with an NVIDIA GPU but not groundrt's environment
# (the `device` tool's machines: PyTorch, CuPy, nvcc, no TensorRT, no pycuda, no network).
#
#   bash benchmarks/gpu_checks.sh [OUT_DIR]        # default: $OUT, else gpu_checks/
#
# Needs Python 3.11+ (-P keeps the source tree off sys.path), numpy, OpenCV, pytest, CuPy and
# nvcc there, and in build/device_wheels/ what the machine cannot fetch: pycuda's sdist and
# pure-Python dependencies, onnxruntime-gpu and the runtime's other wheels (sentencepiece,
# pycocotools, tqdm, flatbuffers), fetched beforehand on a machine with PyPI by
# `bash benchmarks/gpu_checks.sh --download`. Steps:
#   1. the device, driver and library versions;
#   2. the CPU library (built if missing) and the fatbin (rebuilt with this machine's nvcc if it
#      does not load, and the log says so);
#   3. benchmarks/kernels_gpu.py: every kernel output against the CPU library, kernel times and
#      achieved bandwidth (cupy) -> kernels_gpu.json;
#   4. pycuda built from its sdist, then the GPU tests of tests/test_kernels.py, which drive the
#      runtime's own launcher (groundrt.kernels.cuda.CudaKernels), from one and from 4 threads
#      -> pytest_gpu.txt;
#   5. onnxruntime-gpu and the runtime's wheels installed beside the image's packages; the GPU
#      tests of tests/test_devices_and_fallbacks.py (ONNX Runtime's CUDA provider against the
#      CPU, a Grounder shared by threads on the GPU) -> pytest_ort_gpu.txt;
#   6. `groundrt run` on the sample video with --device cuda and on the CPU, the masks compared
#      (benchmarks/compare_runs.py: mean IoU >= 0.99) -> run_*.jsonl, compare.txt;
#   7. per-stage latency, `groundrt bench` on the GPU and on the CPU -> bench_*.txt.
# TensorRT itself is not on these machines: its backend and engine builds are not run here.
# Each step logs and goes on when an earlier one fails; the exit status is the worst step's.
set -u
WHEELS=build/device_wheels
PY=${PYTHON:-python3}
if [[ "${1:-}" == "--download" ]]; then  # on a machine with PyPI: what the device cannot fetch
  mkdir -p "$WHEELS"
  "$PY" -m pip download -q -d "$WHEELS" --no-deps --no-binary pycuda pycuda
  "$PY" -m pip download -q -d "$WHEELS" --no-deps --only-binary :all: \
    mako pytools platformdirs typing_extensions
  for py in 3.10 3.11 3.12 3.13; do  # the compiled dependencies, for whichever Python is there
    "$PY" -m pip download -q -d "$WHEELS" --only-binary :all: --python-version "$py" \
      --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 markupsafe siphash24
    "$PY" -m pip download -q -d "$WHEELS" --no-deps --only-binary :all: --python-version "$py" \
      --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 \
      --platform manylinux_2_17_x86_64 onnxruntime-gpu sentencepiece pycocotools
  done
  "$PY" -m pip download -q -d "$WHEELS" --no-deps --only-binary :all: tqdm flatbuffers coloredlogs \
    humanfriendly
  exit 0
fi

OUT_DIR=${1:-${OUT:-gpu_checks}}
mkdir -p "$OUT_DIR"
status=0
step() { echo; echo "== $* ($(date +%T))"; }
fail() { echo "FAILED: $*"; status=1; }

step "device and versions"
nvidia-smi --query-gpu=name,driver_version,compute_cap,memory.total,clocks.max.sm,clocks.max.mem \
  --format=csv | tee "$OUT_DIR/device.csv"
nvcc --version | tail -2
"$PY" - <<'EOF'
import importlib, sys
print("python", sys.version.split()[0])
for name in ("numpy", "cupy", "torch", "onnxruntime", "cv2", "pycuda", "tensorrt"):
    try:
        print(name, importlib.import_module(name).__version__)
    except Exception as error:
        print(name, "-", type(error).__name__, error)
EOF

source benchmarks/groundrt_shim.sh

step "kernels: CPU library and fatbin"
if ! "$PY" -P -c "from groundrt.kernels import cpu; cpu.library()"; then
  cmake -S . -B build/device -DGROUNDRT_WITH_CUDA=OFF && cmake --build build/device -j 16 \
    || fail "CPU library build"
fi
if "$PY" -P -c "
import cupy
from groundrt.kernels import cuda
cupy.RawModule(path=str(cuda.fatbin_path())).get_function('grt_affinity_kernel')"; then
  echo "the fatbin built by the build machine's nvcc loads"
else
  echo "the shipped fatbin does not load on this driver: rebuilding it with this machine's nvcc"
  # ON explicitly: the CPU-only step above may have left OFF in build/device's cache
  cmake -S . -B build/device -DGROUNDRT_WITH_CUDA=ON && cmake --build build/device -j 16 \
    || fail "fatbin rebuild"
fi

step "kernels: GPU vs CPU library, timings and bandwidth (cupy)"
"$PY" benchmarks/kernels_gpu.py --runs 200 --json "$OUT_DIR/kernels_gpu.json" \
  > "$OUT_DIR/kernels_gpu.log" 2>&1 || fail "kernels_gpu.py"
tail -c 3000 "$OUT_DIR/kernels_gpu.log"

step "pycuda from its sdist"
if ! "$PY" -P -c "import pycuda.driver" 2>/dev/null; then
  SITE=$(mktemp -d)  # pycuda's pure-Python dependencies, beside the image's packages
  "$PY" -m pip install -q --no-index --find-links "$WHEELS" --target "$SITE" pytools platformdirs \
    mako || fail "pycuda's dependencies"
  export PYTHONPATH="$PYTHONPATH:$SITE"
  BUILD=$PWD/build/device_pycuda
  rm -rf "$BUILD"; mkdir -p "$BUILD"
  tar xzf "$WHEELS"/pycuda-*.tar.gz -C "$BUILD"
  # link against the driver's own libcuda.so.1 (the toolkit may hold no unversioned libcuda.so)
  mkdir "$BUILD/driver"
  ln -s "$("$PY" -P -c "import ctypes; ctypes.CDLL('libcuda.so.1'); print(next(line.split()[-1]
    for line in open('/proc/self/maps') if 'libcuda.so' in line))")" "$BUILD/driver/libcuda.so"
  (cd "$BUILD"/pycuda-* &&
    "$PY" configure.py --cuda-root="$(dirname "$(dirname "$(command -v nvcc)")")" \
      --cudadrv-lib-dir="$BUILD/driver" --no-cuda-enable-curand > /dev/null &&
    timeout 400 "$PY" setup.py build -j 16 > build.log 2>&1) \
    || { fail "pycuda build"; tail -20 "$BUILD"/pycuda-*/build.log; }
  for built in "$BUILD"/pycuda-*/build/lib.*; do export PYTHONPATH="$built:$PYTHONPATH"; done
  "$PY" -P -c "import pycuda.driver as d; d.init(); print('pycuda', d.get_version(), d.Device(0).name())" \
    || fail "pycuda import"
fi

step "GPU tests (pycuda, the runtime's CudaKernels)"
"$PY" -P -m pytest -q -p no:cacheprovider tests/test_kernels.py -k "gpu or fatbin" -rs \
  2>&1 | tee "$OUT_DIR/pytest_gpu.txt" | tail -15
[[ ${PIPESTATUS[0]} -eq 0 ]] || fail "GPU tests"

step "onnxruntime-gpu and the runtime's wheels"
ORT_SITE=$(mktemp -d)  # first on the path: it shadows a CPU-only onnxruntime of the image
"$PY" -m pip install -q --no-index --no-deps --find-links "$WHEELS" --target "$ORT_SITE" \
  onnxruntime-gpu sentencepiece pycocotools tqdm flatbuffers coloredlogs humanfriendly \
  || fail "onnxruntime-gpu install"
export PYTHONPATH="$ORT_SITE:$PYTHONPATH"
"$PY" -P -c "
import onnxruntime as ort
print('onnxruntime', ort.__version__, ort.get_available_providers())
assert 'CUDAExecutionProvider' in ort.get_available_providers()" || fail "onnxruntime-gpu import"

step "GPU tests (ONNX Runtime's CUDA provider, a Grounder shared by threads)"
"$PY" -P -m pytest -q -p no:cacheprovider tests/test_devices_and_fallbacks.py -rs -s \
  2>&1 | tee "$OUT_DIR/pytest_ort_gpu.txt" | tail -15
[[ ${PIPESTATUS[0]} -eq 0 ]] || fail "ONNX Runtime GPU tests"

step "groundrt run on the sample video: --device cuda against the CPU"
GROUNDRT=("$PY" -P -m groundrt.runtime.cli)
CAPTION="In this picture we can see a red circle, two blue squares and a yellow star on the grass under the sky."
"${GROUNDRT[@]}" data video --out "$OUT_DIR/sample.mp4" > /dev/null || fail "sample video"
for where in cuda cpu; do
  "${GROUNDRT[@]}" run --source "$OUT_DIR/sample.mp4" --caption "$CAPTION" --backend onnxruntime \
    --precision fp32 --device "$where" --json "$OUT_DIR/run_$where.jsonl" --quiet \
    2>&1 | tee "$OUT_DIR/run_$where.txt" | tail -3
  [[ ${PIPESTATUS[0]} -eq 0 ]] || fail "groundrt run --device $where"
done
"$PY" -P benchmarks/compare_runs.py "$OUT_DIR/run_cuda.jsonl" "$OUT_DIR/run_cpu.jsonl" \
  --min-mean-iou 0.99 | tee "$OUT_DIR/compare.txt"
[[ ${PIPESTATUS[0]} -eq 0 ]] || fail "GPU masks against the CPU's"

step "per-stage latency (groundrt bench, 640x480, 8 phrases)"
for where in cuda cpu; do
  "${GROUNDRT[@]}" bench --backend onnxruntime --precision fp32 --device "$where" --runs 200 \
    2>&1 | tee "$OUT_DIR/bench_$where.txt" | tail -4
  [[ ${PIPESTATUS[0]} -eq 0 ]] || fail "groundrt bench --device $where"
done

step "done: status $status"
exit $status
