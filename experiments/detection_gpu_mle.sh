#!/usr/bin/env bash
# Continue the cpu preset's MLE detector on a lent GPU, one process. Measured on an H200: 19
# updates/s when every step went through nnx.jit (its graph traversal, ~50 ms a call, bounds the
# loop); train.fit's functional path (steps' .functional) removes that traversal. The cpu
# preset's config is unchanged, so any checkpoint that comes back can be shipped as the cpu
# preset's starting point with `python -m rlcv_lib ship detection cpu --workdir DIR --at STEP`.
#
# Here, before the call: a snapshot of the run to continue, its checkpoint and history only:
#   START=14000; rm -rf runs/gpu_start && mkdir -p runs/gpu_start/detection-cpu/checkpoints
#   cp -r runs/pretrain/detection-cpu/checkpoints/$START runs/gpu_start/detection-cpu/checkpoints/
#   (history.jsonl filtered to step <= START beside it)
# On the device (carry [".whl_coco", "runs/gpu_start"]), after installing ONLY the pycocotools wheel
# (the image's JAX 0.11.2, flax 0.12.10, optax, orbax run the package; our flax wheel breaks it):
#   OUT=$OUT MLE_SECONDS=420 bash experiments/detection_gpu_mle.sh
# Back in $OUT: mle.log (tail), history.jsonl, ckpt_<step>.tgz for the last two checkpoints,
# summary.txt (validation curve and measured updates/s).
set -u
OUT=${OUT:-runs/gpu_mle_out}
MLE_SECONDS=${MLE_SECONDS:-420}
EVAL_EVERY=${EVAL_EVERY:-2000}  # validation (256 scenes, pycocotools) every this many updates
W=runs/gpu_mle_work
RUN=$W/detection-cpu
CACHE=runs/pretrain/scenes_cache
mkdir -p "$OUT" "$W"
export PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # make_caches.py runs from $W
t0=$(date +%s)
stamp() { echo "[$(( $(date +%s) - t0 )) s] $*"; }

rm -rf "$RUN" && cp -r runs/gpu_start/detection-cpu "$RUN" || exit 1
START=$(ls "$RUN/checkpoints" | grep -E '^[0-9]+$' | sort -n | tail -1)
stamp "start: step $START"

cat >"$W/make_caches.py" <<EOF
import jax
from rlcv_lib.config import get_config
from rlcv_lib.data import sources

if __name__ == "__main__":  # generation spawns workers, which re-import this file
    print(jax.__version__, jax.devices())
    cfg = get_config("cpu")
    for split, size in (("train", None), ("validation", 256)):
        sources.open_source("scenes", split, world=cfg.world, cache_dir="$CACHE", size=size,
                            workers=12)
EOF
timeout 120 python3 "$W/make_caches.py" || { stamp "cache generation failed"; exit 1; }
stamp "caches ready"

timeout "$MLE_SECONDS" python3 -m rlcv_lib pretrain detection cpu --workdir "$RUN" \
  train.num_steps=500000 train.eval_every="$EVAL_EVERY" train.ckpt_every=2000 \
  train.keep_checkpoints=1000 >"$W/mle.log" 2>&1
stamp "MLE exited $? (124 = stopped by its time limit, as planned)"
tr '\r' '\n' <"$W/mle.log" | grep -v "^detection MLE" | tail -40 >"$OUT/mle.log"
tail -c 3000 "$W/mle.log" | tr '\r' '\n' | tail -3 >>"$OUT/mle.log"

cp "$RUN/history.jsonl" "$OUT/history.jsonl"
for s in $(ls "$RUN/checkpoints" | grep -E '^[0-9]+$' | sort -n | tail -2); do
  tar czf "$OUT/ckpt_$s.tgz" -C "$RUN/checkpoints" "$s"
done
python3 - "$OUT/history.jsonl" "$START" <<'EOF' | tee "$OUT/summary.txt"
import json, sys
recs = [json.loads(line) for line in open(sys.argv[1])]
start = int(sys.argv[2])
for r in recs:
    if r.get("kind") == "eval" and r["step"] >= start:
        print("eval %6d mAP %.2f AP50 %.2f recall50 %.2f boxes/img %.2f (true %.2f) nll_class %.3f"
              % (r["step"], 100 * r["mAP"], 100 * r["AP50"], 100 * r["recall50"],
                 r["boxes_per_image"], r["gt_per_image"], r["nll_class"]))
rates = [r["steps_per_s"] for r in recs if r.get("kind") == "train" and r["step"] > start + 100]
if rates:
    rates.sort()
    print("updates/s over %d log windows: median %.1f, min %.1f, max %.1f"
          % (len(rates), rates[len(rates) // 2], rates[0], rates[-1]))
EOF
ls -la "$OUT"
stamp "done"
