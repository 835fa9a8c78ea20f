#!/usr/bin/env bash
# One device call that sets up, checks, benchmarks and trains on a lent GPU, within one lease.
# Here first: bash benchmarks/gpu/fetch_wheels.sh. Then the device tool's `run` with
#   command: bash benchmarks/gpu/session.sh      carry: [".whl"]      timeout_s: 600
# Writes under $OUT (≤ 8 files come back): env.txt, checks.txt, bench.txt, train.log,
# metrics.csv and, when it is small enough to come back (≤ 15 MiB per part, ≤ 3 parts), the
# exported model as model.tar.gz.part-aa… (`cat model.tar.gz.part-* | tar xz`).
# Knobs (environment): TRAIN_MIN (training budget, min; default 4), TRAIN_ARGS (extra Hydra
# overrides of the training run), SKIP_CHECKS=1, SKIP_BENCH=1. The last lines print a summary.
# The training prior the CPU model taught us to use (experiments/wse2te/REPORT.md: robustness,
# dose): TRAIN_ARGS="microscope.defocus_angstrom.std=30 microscope.source_size_angstrom.std=0.17
#   microscope.c23_angstrom.std=1000 microscope.probe_current_pa.mean=20
#   microscope.probe_current_pa.std=15" (the realistic prior stays the evaluation prior).
set -uo pipefail
OUT=${OUT:-/tmp/stemjax_gpu_out}; mkdir -p "$OUT"
TRAIN_MIN=${TRAIN_MIN:-4}; TRAIN_ARGS=${TRAIN_ARGS:-}
t0=$(date +%s); el() { echo "[$(( $(date +%s) - t0 )) s] $*"; }
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target /tmp/site .whl/*.whl || { echo "wheel install failed"; exit 1; }
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD
fi
export PYTHONUNBUFFERED=1
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null
  python3 -c "import jax, flax, optax, orbax.checkpoint, hydra, ase; print('jax', jax.__version__, 'flax', flax.__version__, 'optax', optax.__version__, jax.devices())"
} 2>&1 | tee "$OUT/env.txt"
el "setup done"
# 1. checks on the accelerator: the physics against closed forms and abTEM, the model, the loop
if [ -z "${SKIP_CHECKS:-}" ]; then
  timeout 150 python3 -m pytest -q -x -p no:cacheprovider tests/physics tests/model \
      > "$OUT/checks.txt" 2>&1; echo "checks exit $?" >> "$OUT/checks.txt"
  tail -3 "$OUT/checks.txt"; el "checks done"
fi
# 2. benchmarks: train step split (full wse2te settings), simulator vs abTEM on this machine
if [ -z "${SKIP_BENCH:-}" ]; then
  { timeout 120 python3 benchmarks/train_step.py +experiment=wse2te $TRAIN_ARGS
    timeout 150 python3 benchmarks/simulate.py --quick --repeat 3
  } > "$OUT/bench.txt" 2>&1
  el "benchmarks done"
fi
# 3. training with a wall-clock budget (checkpoint at the budget; the same command resumes)
run=/tmp/stemjax_run
python3 -m stemjax.train +experiment=wse2te trainer.progress=false trainer.eval_every=500 \
    trainer.checkpoint_every=500 trainer.max_minutes="$TRAIN_MIN" $TRAIN_ARGS \
    hydra.run.dir=$run > "$OUT/train.log" 2>&1; echo "train exit $?" >> "$OUT/train.log"
cp $run/metrics.csv "$OUT/" 2>/dev/null
el "training done"
python3 -c "from stemjax.predict import export_model; export_model('$run', '/tmp/stemjax_model')" \
    >> "$OUT/train.log" 2>&1 &&
  tar czf /tmp/model.tar.gz -C /tmp stemjax_model &&
  split -b 15m /tmp/model.tar.gz "$OUT/model.tar.gz.part-" &&
  { n=$(ls "$OUT"/model.tar.gz.part-* | wc -l); [ "$n" -le 3 ] ||
      { echo "model $(du -h /tmp/model.tar.gz | cut -f1) too large to bring back"; rm "$OUT"/model.tar.gz.part-*; }; }
el "export done"
echo "== summary"; cat "$OUT/env.txt"; grep -E "ms/step|images/s|img/s|\|" "$OUT/bench.txt" 2>/dev/null | tail -25
grep -E "step [0-9]+:|max_minutes|Error|exit" "$OUT/train.log" | tail -8; ls -la "$OUT"
