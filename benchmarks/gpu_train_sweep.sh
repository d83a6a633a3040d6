#!/usr/bin/env bash
# Teacher A/Bs side by side on one GPU machine (the `device` tool's: PyTorch with CUDA, numpy,
# OpenCV, no network): the README's training data is generated there, then every variant trains
# at once, each in its own process on the GPU, with the same seed and schedule.
#
#   bash benchmarks/gpu_train_sweep.sh --download        # on a machine with PyPI, beforehand
#   bash benchmarks/gpu_train_sweep.sh OUT_DIR [EPOCHS] [DEADLINE_S]
#
# VARIANTS (name=model config JSON, space-separated) overrides the list below. Each run writes
# OUT_DIR/<name>.log; OUT_DIR/summary.jsonl gets one line per variant (its per-epoch validation
# history, or how far it got). Trainings still running DEADLINE_S seconds (default 540) after
# the start are stopped, so that a time-limited machine returns what finished. COUNT, VAL_COUNT
# and DEVICE (defaults 20000, 1000, cuda) shrink it for a dry run on a CPU; TRAIN_ARGS adds
# options to every `groundrt train` (e.g. --bf16).
set -u
WHEELS=build/train_wheels  # what training needs beyond torch, numpy and OpenCV
PY=${PYTHON:-python3}
if [[ "${1:-}" == "--download" ]]; then
  mkdir -p "$WHEELS"
  # for the device's Python (3.12 on the `device` tool's machines); scipy alone is ~35 MB
  "$PY" -m pip download -q -d "$WHEELS" --no-deps --only-binary :all: \
    --python-version "${DEVICE_PYTHON:-3.12}" --platform manylinux2014_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 \
    sentencepiece safetensors scipy pycocotools tqdm
  exit 0
fi

START=$SECONDS
OUT_DIR=${1:-${OUT:-gpu_sweep}}
EPOCHS=${2:-1}
DEADLINE=${3:-540}
COUNT=${COUNT:-20000}
VAL_COUNT=${VAL_COUNT:-1000}
DEVICE=${DEVICE:-cuda}
VARIANTS=${VARIANTS:-'base={} locality={"locality_channels":true} memory8={"memory_stride":8}
  both={"locality_channels":true,"memory_stride":8}'}
mkdir -p "$OUT_DIR"
OUT_DIR=$(cd "$OUT_DIR" && pwd)
source benchmarks/groundrt_shim.sh

echo "== dependencies ($(date +%T))"
SITE=$(mktemp -d)
for module in sentencepiece safetensors scipy pycocotools tqdm; do
  "$PY" -P -c "import $module" 2>/dev/null || missing+=("$module")
done
if [[ -n "${missing[*]:-}" ]]; then
  echo "installing from $WHEELS: ${missing[*]}"
  "$PY" -m pip install -q --no-index --no-deps --find-links "$WHEELS" --target "$SITE" \
    "${missing[@]}" || exit 1
  export PYTHONPATH="$PYTHONPATH:$SITE"
fi
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
"$PY" -P -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"

groundrt() { "$PY" -P -c "import sys; from groundrt.runtime.cli import main; sys.exit(main())" "$@"; }

echo "== data: the README's train and val splits ($(date +%T))"
DATA=$(mktemp -d)/synth
groundrt data synth --out "$DATA" --split train --count "$COUNT" --seed 1 --workers 16 --quiet &&
  groundrt data synth --out "$DATA" --split val --count "$VAL_COUNT" --seed 20261125 --workers 16 \
    --quiet || exit 1

echo "== training $EPOCHS epoch(s) per variant, all at once ($(date +%T))"
RUNS=$(mktemp -d)
pids=()
for variant in $VARIANTS; do
  name=${variant%%=*}
  echo "${variant#*=}" > "$RUNS/$name.json"
  groundrt train --data "$DATA" --out "$RUNS/$name" --config "$RUNS/$name.json" \
    --epochs "$EPOCHS" --seed 0 --device "$DEVICE" ${TRAIN_ARGS:-} --quiet > "$OUT_DIR/$name.log" 2>&1 &
  pids+=($!)
done
while (( SECONDS - START < DEADLINE )) && kill -0 "${pids[@]}" 2>/dev/null; do sleep 5; done
kill "${pids[@]}" 2>/dev/null
wait

echo "== results ($(date +%T), $((SECONDS - START)) s)"
for variant in $VARIANTS; do
  name=${variant%%=*}
  "$PY" - "$name" "${variant#*=}" "$RUNS/$name/train_state.json" <<'EOF' | tee -a "$OUT_DIR/summary.jsonl"
import json, pathlib, sys
name, config, state_path = sys.argv[1:]
state = pathlib.Path(state_path)
state = json.loads(state.read_text()) if state.is_file() else {}
print(json.dumps({"variant": name, "config": json.loads(config), "step": state.get("step"),
                  "history": state.get("history", [])}))
EOF
  tail -3 "$OUT_DIR/$name.log"
done
