#!/usr/bin/env bash
# The detection sweep one lent GPU session ran (notes/detection_tuning.md): it continues the cpu
# preset's MLE detector (runs/pretrain/detection-cpu, resumed with its optimiser state), ships
# two of the new checkpoints, and tunes the shipped and the new detectors at several learning
# rates, each tuning a separate process sharing the one GPU (the cpu models are far too small to
# fill it). Every tuning prints its validation curve as JSON lines and, if it finishes, writes
# seed0.json with its test rows (`python -m rlcv_lib tune detection`).
#
#   OUT=runs/gpu_sweep MLE_SECONDS=230 TUNE_SECONDS=230 bash experiments/detection_gpu_sweep.sh
#
# On the device machine (2026-11-26): the image's python3 holds JAX 0.11.2 with CUDA and flax
# 0.12.10, optax 0.2.8, orbax 0.12.8, which run this package; only pycocotools has to travel as a
# wheel (.whl, see the device README). Do NOT carry our flax 0.12.8: it fails to import under JAX
# 0.11.2 (jax.experimental.hijax has no HiPrimitive). PHASE2=0 runs phase 1 only. What one
# session measured with it is in notes/detection_tuning.md ("A lent GPU").
set -u
OUT=${OUT:-runs/gpu_sweep}
MLE_SECONDS=${MLE_SECONDS:-230}
TUNE_SECONDS=${TUNE_SECONDS:-230}
TUNE_STEPS=${TUNE_STEPS:-3000}
PHASE2=${PHASE2:-1}  # 0: only phase 1; the last MLE checkpoint comes back unshipped
W=runs/gpu_sweep_work
CACHE=runs/pretrain/scenes_cache
mkdir -p "$OUT" "$W/log"
export PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false
t0=$(date +%s)
stamp() { echo "[$(( $(date +%s) - t0 )) s] $*"; }

stamp "scenes caches"
cat >"$W/make_caches.py" <<EOF
import jax
from rlcv_lib.config import get_config
from rlcv_lib.data import sources

if __name__ == "__main__":  # generation spawns workers, which re-import this file
    print(jax.__version__, jax.devices())
    cfg = get_config("cpu")
    for split, size in (("train", None), ("validation", 256), ("test", 1000)):
        sources.open_source("scenes", split, world=cfg.world, cache_dir="$CACHE", size=size,
                            workers=12)
EOF
timeout 60 python3 "$W/make_caches.py" || exit 1

tune() {  # tune NAME START_DIR LR [key=value ...]
  local name=$1 start=$2 lr=$3
  shift 3
  timeout "$TUNE_SECONDS" python3 -m rlcv_lib tune detection cpu --seed 0 --workdir "$W/$name" \
    --start "$start" --cache "$CACHE" tune.lr="$lr" tune.num_steps="$TUNE_STEPS" \
    tune.eval_every=250 "$@" >"$W/log/$name.log" 2>&1
  stamp "tuning $name exited $?"
}

alive_check() {  # fails fast when a process died in its first seconds (an API break, say)
  sleep 60
  for log in "$W"/log/*.log; do
    if grep -q "Traceback" "$log"; then
      stamp "early failure in $log"; tail -30 "$log"; kill 0
    fi
  done
}

stamp "phase 1: MLE on from step 10000, and tuning the shipped detector"
timeout "$MLE_SECONDS" python3 -m rlcv_lib pretrain detection cpu train.num_steps=200000 \
  train.eval_every=1000 train.ckpt_every=1000 train.keep_checkpoints=1000 \
  >"$W/log/mle.log" 2>&1 &
tune s10k_lr1e-4 checkpoints/detection-cpu 1e-4 &
tune s10k_lr3e-4 checkpoints/detection-cpu 3e-4 &
if [ "$PHASE2" = 1 ]; then
  tune s10k_lr3e-5 checkpoints/detection-cpu 3e-5 &
  tune s10k_lr1e-4_b32 checkpoints/detection-cpu 1e-4 tune.batch_size=32 &
  alive_check
fi
wait
steps=$(ls runs/pretrain/detection-cpu/checkpoints | grep -E '^[0-9]+$' | sort -n)
last=$(echo "$steps" | tail -1)
mid=$(echo "$steps" | awk -v m=$(( (10000 + last) / 2 )) '$1 <= m' | tail -1)
stamp "MLE checkpoints: $(echo $steps | tr '\n' ' ')"
tar czf "$OUT/mle_last.tgz" -C runs/pretrain detection-cpu/history.jsonl \
  "detection-cpu/checkpoints/$last"
if [ "$PHASE2" = 1 ]; then
stamp "shipping $mid and $last"

python3 -m rlcv_lib ship detection cpu --at "$mid" --out "$W/ship_$mid" >"$W/log/ship_mid.log" 2>&1 &
python3 -m rlcv_lib ship detection cpu --at "$last" --out "$W/ship_$last" >"$W/log/ship_last.log" 2>&1 &
wait
stamp "phase 2: tuning the new detectors"
for s in $(printf "%s\n" "$mid" "$last" | sort -un); do
  tune "s${s}_lr1e-4" "$W/ship_$s" 1e-4 &
  tune "s${s}_lr3e-4" "$W/ship_$s" 3e-4 &
done
wait

tar czf "$OUT/ships.tgz" -C "$W" "ship_$mid" "ship_$last"
fi

stamp "packing"
cp runs/pretrain/detection-cpu/history.jsonl "$OUT/mle_history.jsonl"
tar czf "$OUT/results.tgz" -C "$W" log $(cd "$W" && ls -d s*/seed0.json 2>/dev/null)
python3 - <<EOF | tee "$OUT/summary.txt"
import json
for line in open("$OUT/mle_history.jsonl"):
    r = json.loads(line)
    if r.get("kind") == "eval" and r["step"] >= 10000:
        print("MLE", r["step"], "mAP %.2f recall50 %.2f boxes/img %.2f (true %.2f) t %.0f s" % (
            100 * r["mAP"], 100 * r["recall50"], r["boxes_per_image"], r["gt_per_image"],
            r["time"]))
EOF
for f in "$W"/log/s*.log; do
  echo "== $f"; grep '"row"' "$f"; grep '"eval"' "$f" | tail -1
done | tee -a "$OUT/summary.txt"
stamp "done"
