#!/usr/bin/env bash
# Issue 11's instability measurement for docs/RESULTS.md: linear mode connectivity (Frankle et al.
# 2020) of LeNet-300-100 on real MNIST at k = 0 (θ0), for the dense network (round 0) and the
# ~7 % and ~3.6 % IMP tickets (rounds 12 and 15: 6.95 % and 3.58 % of the weights remaining),
# 3 trials (the main line's seeds 0-2), with the paper's settings (flags/lenet300_mnist.flags).
#
#   bash docs/results/instability/run_experiments.sh         # from the repository root
#
# It attaches to the IMP main line runs/lenet300_mnist (docs/RESULTS.md): same flags, same seeds, so
# the first command only checks a finished main line (or resumes it) and the branches write only
# under RUN/branches/instability_seed1/. Each entry trains two copies of the round's network from θ0
# (a full 50K-iteration round each, other data orders) and evaluates the test error at 30 points of
# the line between them (~1-2 s). Cost: 3 rounds x 2 copies x 3 trials = 18 trainings of 50K
# iterations; at ~50 s per training (docs/RESULTS.md: 47.6 s per round on an idle 2-core machine) ~15 min
# (plus 16 rounds x 3 trials = 48 trainings, ~40 minutes, if the main line is not there yet).
# Everything resumes when rerun.
#
# A smoke run of the same commands (a few minutes; one trial, short rounds, another directory):
#   OUT=/tmp/instability_smoke TRIALS=1 ROUNDS=3 LEVELS=0,1,2 EXTRA="--iterations=1000 --eval_every=250" \
#     REPORT=/tmp/instability_smoke/report bash docs/results/instability/run_experiments.sh
set -euo pipefail

LT=${LT:-lottery-tf}
OUT=${OUT:-runs}
TRIALS=${TRIALS:-3}
ROUNDS=${ROUNDS:-16}
LEVELS=${LEVELS:-0,12,15}
K=${K:-0}
EXTRA=${EXTRA:-}
REPORT=${REPORT:-docs/results/instability}
export TFDS_DATA_DIR=${TFDS_DATA_DIR:-../shared/tfds}

MAIN=$OUT/lenet300_mnist

# The run directories of a main line: OUTPUT_DIR itself with one trial, else OUTPUT_DIR/trial_t.
trial_runs() {
  if [ "$TRIALS" = 1 ]; then echo "$1"; else for t in $(seq 0 $((TRIALS - 1))); do echo "$1/trial_$t"; done; fi
}

# 1. The IMP main line (the reproduction): checked, or resumed where it stopped.
# shellcheck disable=SC2086  # EXTRA is a list of flags
$LT --flagfile=flags/lenet300_mnist.flags --rounds="$ROUNDS" --trials="$TRIALS" $EXTRA --output_dir="$MAIN"

# 2. Instability at k = K of each level's network, on every trial.
for run in $(trial_runs "$MAIN"); do
  $LT branch --run_dir="$run" --branch=instability --branch_rounds="$LEVELS" --instability_k="$K"
done

# 3. The report: instability.md (barrier per round and k, mean and min-max over the trials) and
#    instability_paths.png, beside the accuracy tables and figures of the main line.
$LT report --runs="$MAIN" --report_dir="$REPORT" --curve_rounds="$LEVELS"
