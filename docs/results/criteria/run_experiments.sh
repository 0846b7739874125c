#!/usr/bin/env bash
# Issue 10's measurements for docs/RESULTS.md: pruning criteria in IMP, pruning at initialization
# (with Frankle et al. 2021's shuffle ablation) and the tfmot gradual arm, on real MNIST
# (LeNet-300-100, the paper's settings, 3 trials), side by side in one report.
#
#   bash docs/results/criteria/run_experiments.sh            # from the repository root
#
# Levels: IMP rounds 7, 12 and 15 (21.07 %, 6.95 %, 3.58 % of the weights remaining).
# The magnitude main line is today's reproduction, runs/lenet300_mnist (docs/RESULTS.md): same flags,
# same seeds, so a rerun there only checks it and the branches attach to it (they write only under
# RUN/branches/). Rounds 0-15 (16) reach level 15. Cost: 2 criteria x 16 rounds x 3 trials (96
# trainings) + at-init 9 variants x 3 levels x 3 trials (81) + tfmot 3 x 3 (9) = 186 trainings of 50K
# iterations, plus 48 for a magnitude line not yet there: ~50 s each on an idle 2-core machine (2.6-3.3
# hours), but 85-145 s each with two running side by side on a throttled one (2026-12-03: ~4.7 hours
# for 234). Everything resumes when rerun; trials can run apart (one process each, see docs/RESULTS.md).
#
# A smoke run of the same commands (minutes; one trial, short rounds, another directory):
#   OUT=/tmp/criteria_smoke TRIALS=1 ROUNDS=3 LEVELS=1,2 EXTRA="--iterations=1000 --eval_every=250" \
#     REPORT=/tmp/criteria_smoke/report LAYERS_AT=64 bash docs/results/criteria/run_experiments.sh
set -euo pipefail

LT=${LT:-lottery-tf}
OUT=${OUT:-runs}
TRIALS=${TRIALS:-3}
ROUNDS=${ROUNDS:-16}
LEVELS=${LEVELS:-7,12,15}
EXTRA=${EXTRA:-}
REPORT=${REPORT:-docs/results/criteria}
LAYERS_AT=${LAYERS_AT:-7}
export TFDS_DATA_DIR=${TFDS_DATA_DIR:-../shared/tfds}

MAGNITUDE=$OUT/lenet300_mnist
main_lines=("$MAGNITUDE")

# The run directories of a main line: OUTPUT_DIR itself with one trial, else OUTPUT_DIR/trial_t.
trial_runs() {
  if [ "$TRIALS" = 1 ]; then echo "$1"; else for t in $(seq 0 $((TRIALS - 1))); do echo "$1/trial_$t"; done; fi
}

# 1. IMP main lines: magnitude (the reproduction), magnitude_increase and movement (Zhou et al. 2019).
# shellcheck disable=SC2086  # EXTRA is a list of flags
$LT --flagfile=flags/lenet300_mnist.flags --rounds="$ROUNDS" --trials="$TRIALS" $EXTRA --output_dir="$MAGNITUDE"
for criterion in magnitude_increase movement; do
  # shellcheck disable=SC2086
  $LT --flagfile=flags/lenet300_mnist.flags --rounds="$ROUNDS" --trials="$TRIALS" --criterion=$criterion $EXTRA \
    --output_dir="$OUT/lenet300_mnist_$criterion"
  main_lines+=("$OUT/lenet300_mnist_$criterion")
done

for run in $(trial_runs "$MAGNITUDE"); do
  # 2. Pruning θ0 at initialization to each level's overall count; the global scope lets each criterion
  #    choose the layers' shares, as SNIP, GraSP and SynFlow were published (--global_exclude=output:
  #    the output layer stays dense). The shuffle ablation permutes each layer's mask. (random with
  #    shuffle is random again, so it is left out.)
  for criterion in snip grasp synflow magnitude_at_init random; do
    for ablation in none shuffle; do
      if [ "$criterion" = random ] && [ "$ablation" = shuffle ]; then continue; fi
      $LT branch --run_dir="$run" --branch=at_init --branch_criterion=$criterion --branch_scope=global \
        --ablation=$ablation --branch_rounds="$LEVELS"
    done
  done
  # 3. tfmot's gradual magnitude pruning of the dense θ0 network to each level's per-layer sparsities.
  $LT branch --run_dir="$run" --branch=tfmot_gradual --branch_rounds="$LEVELS"
done

# 4. One report: every criterion and arm a series; per-layer sparsities near LAYERS_AT % remaining.
runs=$(IFS=,; echo "${main_lines[*]}")
$LT report --runs="$runs" --report_dir="$REPORT" --layers_at_remaining="$LAYERS_AT" \
  --curve_rounds=0,"$LEVELS"

# 5. The raw record behind the report, small enough to commit: every run's text files (config,
#    metrics with learning curves, summaries, branch records, checksum manifests), no weights, masks
#    or checkpoints. `tar xJf $REPORT/runs.tar.xz -C DIR` gives run directories that `lottery-tf
#    report` reads as they are; a missing trial is trained beside them with --trial_index.
tar cJf "$REPORT/runs.tar.xz" -C "$OUT" --exclude='*.npz' --exclude=checkpoints --exclude=tensorboard \
  --exclude=.lock --exclude='.update.lock' "${main_lines[@]#"$OUT"/}"
echo "raw record -> $REPORT/runs.tar.xz"
