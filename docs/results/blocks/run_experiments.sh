#!/usr/bin/env bash
# Issue 12's accuracy question for docs/RESULTS.md: does IMP still find winning tickets when it prunes
# whole 1x4 blocks (--block=1x4, the layout of TFLite's sparse float kernel)? LeNet-300-100 on real MNIST
# with the paper's settings (flags/lenet300_mnist.flags), 3 trials, the block line next to the
# unstructured one, in one report.
#
#   bash docs/results/blocks/run_experiments.sh            # from the repository root
#
# Levels: rounds 12, 13, 14 (6.95 %, 5.6 %, 4.47 % of the weights remaining; ~5 % is the question).
# The unstructured line is the reproduction, runs/lenet300_mnist (docs/RESULTS.md; same flags and seeds,
# so a rerun there only checks its rounds); the block line differs by --block=1x4 only. A random
# reinitialization of each line's tickets tells a winning ticket from a merely trainable sparse net.
# Cost at ~50 s per 50K-iteration training on an idle 2-core machine: the block line's 15 rounds x 3
# trials (45 trainings; the unstructured line's are the reproduction's) + 2 lines x 3 levels x 3 trials
# of random reinitialization (18): about 55 minutes; everything resumes when rerun.
#
# A smoke run of the same commands (minutes; one trial, short rounds, another directory):
#   OUT=/tmp/blocks_smoke TRIALS=1 ROUNDS=3 LEVELS=1,2 EXTRA="--iterations=200 --eval_every=100" \
#     REPORT=/tmp/blocks_smoke/report bash docs/results/blocks/run_experiments.sh
set -euo pipefail

LT=${LT:-lottery-tf}
OUT=${OUT:-runs}
TRIALS=${TRIALS:-3}
ROUNDS=${ROUNDS:-15}
LEVELS=${LEVELS:-12,13,14}
EXTRA=${EXTRA:-}
REPORT=${REPORT:-docs/results/blocks}
export TFDS_DATA_DIR=${TFDS_DATA_DIR:-../shared/tfds}

UNSTRUCTURED=$OUT/lenet300_mnist
BLOCKS=$OUT/lenet300_mnist_block1x4

# The run directories of a main line: OUTPUT_DIR itself with one trial, else OUTPUT_DIR/trial_t.
trial_runs() {
  if [ "$TRIALS" = 1 ]; then echo "$1"; else for t in $(seq 0 $((TRIALS - 1))); do echo "$1/trial_$t"; done; fi
}

# 1. The two IMP lines: unstructured (the paper's) and 1x4 blocks; rates count weights in both.
# shellcheck disable=SC2086  # EXTRA is a list of flags
$LT --flagfile=flags/lenet300_mnist.flags --rounds="$ROUNDS" --trials="$TRIALS" $EXTRA --output_dir="$UNSTRUCTURED"
# shellcheck disable=SC2086
$LT --flagfile=flags/lenet300_mnist.flags --rounds="$ROUNDS" --trials="$TRIALS" --block=1x4 $EXTRA \
  --output_dir="$BLOCKS"

# 2. Random reinitialization of each line's masks at the levels (the paper's control).
for line in "$UNSTRUCTURED" "$BLOCKS"; do
  for run in $(trial_runs "$line"); do
    $LT branch --run_dir="$run" --branch=random_reinit --branch_rounds="$LEVELS"
  done
done

# 3. One report: each line and its control a series ("IMP (winning tickets): 1x4 blocks").
$LT report --runs="$UNSTRUCTURED,$BLOCKS" --report_dir="$REPORT" --curve_rounds=0,"$LEVELS"
