#!/usr/bin/env bash
# Issue 11's measurements for docs/RESULTS.md: the price of a ticket on real MNIST (LeNet-300-100, the
# paper's settings, 3 trials): Early-Bird IMP's epsilon trade-off (cost and accuracy of the tickets it
# finds), the reset modes lr_rewind and finetune beside θ0, and one-shot, side by side in one report.
#
#   bash docs/results/cheaper/run_experiments.sh            # from the repository root
#
# Levels: IMP rounds 7, 12 and 15 (21.07 %, 6.95 %, 3.58 % of the weights remaining). The plain IMP line
# is the reproduction, runs/lenet300_mnist (docs/RESULTS.md): same flags and seeds, so a rerun there
# only checks it (its older rounds get their cost added up by the report). An Early-Bird run is extended
# level by level (--rounds=7, then 12, then 15): each step trains the new rounds (stopped early) and
# then its last mask in full (RUN/branches/final/round_R), so one run gives a ticket per level.
#
# Reset modes: finetune trains bitwise like lr_rewind under the paper's constant Adam rate (every mode
# restarts the optimizer, and a constant rate is its own final rate; the smoke run below prints the same
# accuracies for both). Both run, so that the record shows it at every level; RESETS=lr_rewind halves
# their cost.
#
# Cost, at ~50 s per 50K-iteration training on an idle 2-core machine: lr_rewind and finetune, 16 rounds
# x 3 trials each (96 trainings, ~80 min); one-shot 3 targets x 3 trials (9, ~8 min); Early-Bird, per
# setting and trial, rounds 0..14 stopped early plus 3 full finals: between ~4 trainings (stopping at
# ~3K iterations) and 18 (never stopping), i.e. 5 settings x 3 trials = 60 to 270 trainings (~50 min to
# ~3.8 h). All in all about 2.5 to 5 hours (the plain IMP line is already there); everything resumes
# when rerun. Step 6: rounds 0..23 stopped at ~3K iterations plus 8 finals, ~9.5 trainings a trial (28
# in all, ~25 min).
#
# A smoke run of the same commands (minutes; one trial, short rounds, another directory):
#   OUT=/tmp/cheaper_smoke TRIALS=1 LEVELS="2 3" EPSILONS="0.3" ALL_EPSILONS="" WINDOW=2 RESETS="lr_rewind finetune" SPARSER_LEVELS="3 5" SPARSER_FINALS=4 \
#     EXTRA="--iterations=600 --eval_every=100" REPORT=/tmp/cheaper_smoke/report \
#     bash docs/results/cheaper/run_experiments.sh
set -euo pipefail

LT=${LT:-lottery-tf}
PYTHON=${PYTHON:-python3}
OUT=${OUT:-runs}
TRIALS=${TRIALS:-3}
LEVELS=${LEVELS:-7 12 15}
WINDOW=${WINDOW:-5}
EPSILONS=${EPSILONS-0.05 0.1 0.2 0.3}    # by the pruned set (--early_bird_distance=pruned)
ALL_EPSILONS=${ALL_EPSILONS-0.1}           # by all weights: Early-Bird's own convention and setting
RESETS=${RESETS:-lr_rewind finetune}
EXTRA=${EXTRA:-}
REPORT=${REPORT:-docs/results/cheaper}
SPARSER_LEVELS=${SPARSER_LEVELS-7 12 15 16 20 24}   # step 6: where Early-Bird stops working ("" skips it)
SPARSER_FINALS=${SPARSER_FINALS-18,22}               # step 6: tickets also at these rounds in between
export TFDS_DATA_DIR=${TFDS_DATA_DIR:-../shared/tfds}

last=${LEVELS##* }
rounds=$((last + 1))   # rounds 0..last: the main lines' level `last` is a trained round
MAGNITUDE=$OUT/lenet300_mnist
main_lines=("$MAGNITUDE")

trial_runs() {
  if [ "$TRIALS" = 1 ]; then echo "$1"; else for t in $(seq 0 $((TRIALS - 1))); do echo "$1/trial_$t"; done; fi
}

# 1. Plain IMP (the reproduction) and the reset modes that keep the trained weights (Renda et al. 2020).
# shellcheck disable=SC2086  # EXTRA is a list of flags
$LT --flagfile=flags/lenet300_mnist.flags --rounds="$rounds" --trials="$TRIALS" $EXTRA --output_dir="$MAGNITUDE"
for reset in $RESETS; do
  # shellcheck disable=SC2086
  $LT --flagfile=flags/lenet300_mnist.flags --rounds="$rounds" --trials="$TRIALS" --reset=$reset $EXTRA \
    --output_dir="$OUT/lenet300_mnist_$reset"
  main_lines+=("$OUT/lenet300_mnist_$reset")
done

# 2. One-shot from round 0 to each level's overall sparsity.
targets=""
for run in $(trial_runs "$MAGNITUDE"); do
  targets=$($PYTHON - "$run" $LEVELS <<'PY'
import sys
from lottery_tf.lottery.run_dir import RunDir
run = RunDir(sys.argv[1])
print(",".join(f"{1 - run.read_metrics(int(r))['remaining_pct'] / 100:.4f}" for r in sys.argv[2:]))
PY
)
  $LT branch --run_dir="$run" --branch=one_shot --targets="$targets"
done

# 3. Early-Bird IMP, one run per setting, extended level by level (each level: its final ticket).
early_bird() {  # NAME EPSILON DISTANCE
  for level in $LEVELS; do
    # shellcheck disable=SC2086
    $LT --flagfile=flags/lenet300_mnist.flags --rounds="$level" --trials="$TRIALS" \
      --early_bird="$2,$WINDOW" --early_bird_distance="$3" $EXTRA --output_dir="$OUT/$1"
  done
  main_lines+=("$OUT/$1")
}
for eps in $EPSILONS; do early_bird "lenet300_mnist_eb_pruned_$eps" "$eps" pruned; done
for eps in $ALL_EPSILONS; do early_bird "lenet300_mnist_eb_all_$eps" "$eps" all; done

# 4. One report: every method a series; the price figure and the Early-Bird mask distances. The
#    magnitude line enters as a directory of links with only its one-shot branch, so that other
#    branches on it (issue 10's at-init ones, say) stay out of these figures.
view=$(mktemp -d)
for run in $(trial_runs "$MAGNITUDE"); do
  dest=$view/lenet300_mnist/${run#"$MAGNITUDE"}
  mkdir -p "$dest/branches"
  for f in "$run"/* "$run"/.[!.]*; do
    if [ -e "$f" ] && [ "$(basename "$f")" != branches ]; then ln -s "$(realpath "$f")" "$dest/"; fi
  done
  ln -s "$(realpath "$run/branches/one_shot")" "$dest/branches/"
done
runs=$(IFS=,; echo "$view/lenet300_mnist,${main_lines[*]:1}")
$LT report --runs="${runs%,}" --report_dir="$REPORT" --curve_rounds=0,"${LEVELS// /,}"
rm -rf "$view"

# 5. How alike Early-Bird's and plain IMP's masks are: per layer and level, the share of IMP's kept
#    weights the Early-Bird ticket also keeps (chance: the kept fraction), over the trials both have.
$PYTHON - "$MAGNITUDE" "$TRIALS" "$REPORT/mask_overlap.md" "${main_lines[@]:1}" <<'PY'
import sys
import numpy as np
from lottery_tf.lottery.run_dir import RunDir

magnitude, trials, out, lines = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4:]
def trial(path, t):
    return RunDir(path if trials == 1 else f"{path}/trial_{t}")
rows = ["| Early-Bird run | trials | level (round) | layer | kept by IMP (%) | "
        "kept by both / kept by IMP (%): mean (min–max) |",
        "| --- | ---: | ---: | --- | ---: | --- |"]
for line in lines:
    if not trial(line, 0).branch("final").complete_entries():
        continue  # not an Early-Bird run (a reset mode's line)
    levels = sorted({e.name for t in range(trials) for e in trial(line, t).branch("final").complete_entries()})
    for level in levels:
        r = int(level[6:])
        overlaps, kept = {}, {}
        for t in range(trials):
            final = trial(line, t).branch("final")
            if level not in [e.name for e in final.complete_entries()]:
                continue
            imp, eb = trial(magnitude, t).load_masks(r), final.entry(level).read_masks()
            for name in imp:
                both = np.count_nonzero((imp[name] != 0) & (eb[name] != 0))
                overlaps.setdefault(name, []).append(100.0 * both / max(1, np.count_nonzero(imp[name])))
                kept.setdefault(name, []).append(100.0 * np.count_nonzero(imp[name]) / imp[name].size)
        for name, o in overlaps.items():
            rows.append(f"| {line.rstrip('/').rsplit('/', 1)[-1]} | {len(o)} | {r} | {name} | "
                        f"{np.mean(kept[name]):.2f} | {np.mean(o):.1f} ({min(o):.1f}–{max(o):.1f}) |")
with open(out, "w") as f:
    f.write("\n".join(rows) + "\n")
print(f"mask overlap -> {out}")
PY

# 6. Where Early-Bird stops working: its own setting (ε 0.1 by all weights) extended past the main
#    levels, in a run of its own (a run is extended only from its weights; the one above may be a
#    restored, weightless record), reported on its own.
if [ -n "$SPARSER_LEVELS" ]; then
  for level in $SPARSER_LEVELS; do
    # shellcheck disable=SC2086
    $LT --flagfile=flags/lenet300_mnist.flags --rounds="$level" --trials="$TRIALS" \
      --early_bird="0.1,$WINDOW" --early_bird_distance=all $EXTRA --output_dir="$OUT/sparser/lenet300_mnist_eb_all_0.1"
  done
  if [ -n "$SPARSER_FINALS" ]; then
    for run in $(trial_runs "$OUT/sparser/lenet300_mnist_eb_all_0.1"); do
      $LT branch --run_dir="$run" --branch=final --branch_rounds="$SPARSER_FINALS"
    done
  fi
  $LT report --runs="$OUT/sparser/lenet300_mnist_eb_all_0.1" --report_dir="$REPORT/sparser" \
    --curve_rounds=0,"${SPARSER_LEVELS// /,}"
fi
