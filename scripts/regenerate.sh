#!/usr/bin/env bash
# Regenerate a leaderboard's rows on JOBS cores: one `mmrobust-bench sweep` process per (entry, seed) unit of
# the sweep YAML (`--only LABEL --seeds SEED`), JOBS at a time, the labels named in $FIRST first so the
# slowest units do not leave one core working alone at the end. Every process is the leaderboard's sweep
# command restricted to one unit: all write the same ROOT (the result store's lock merges their rows) and
# rerunning this script resumes the regeneration (finished cells are skipped, a cell under way resumes at its
# next batch). Each unit's log: ROOT/logs/LABEL-sSEED.log.
#
#   FIRST=msefm,crmt_mmt bash scripts/regenerate.sh leaderboards/synthav/sweep.yaml leaderboards/synthav/runs 2
#   bash scripts/regenerate.sh CONFIG ROOT JOBS --dataset-set data_root=FSDD/recordings   # extra sweep args
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -lt 3 ]; then
  echo "usage: [FIRST=label,...] bash scripts/regenerate.sh CONFIG ROOT JOBS [extra sweep arguments]" >&2
  exit 2
fi
CONFIG="$1" ROOT="$2" JOBS="$3"
shift 3
[ -f "$CONFIG" ] || { echo "regenerate.sh: no sweep YAML at $CONFIG; give the leaderboard's sweep.yaml" >&2; exit 2; }
PY="${PYTHON:-.venv/bin/python}"  # $PYTHON: another interpreter with mmrobust-bench installed
command -v "$PY" >/dev/null || { echo "regenerate.sh: no $PY; run 'bash scripts/install.sh' first" >&2; exit 2; }
mkdir -p "$ROOT/logs"
# "LABEL SEED" per unit in the YAML's order, the labels of $FIRST moved to the front in the order given
"$PY" - "$CONFIG" "${FIRST:-}" <<'EOF' > "$ROOT/logs/queue.txt"
import sys
from mmrobust_bench.bench.sweep import build_plan, load_sweep_config

plan = build_plan(load_sweep_config(sys.argv[1]))
first = [label for label in sys.argv[2].split(",") if label]
units = [(entry.label, seed) for entry, seed in plan.work_units()]
unknown = sorted(set(first) - {label for label, _ in units})
if unknown:
    print(f"regenerate.sh: FIRST names {', '.join(unknown)}, not an entry of {sys.argv[1]}; use its labels",
          file=sys.stderr)
    sys.exit(2)
rank = {label: i for i, label in enumerate(first)}
for label, seed in sorted(units, key=lambda u: rank.get(u[0], len(first))):
    print(label, seed)
EOF
echo "regenerate.sh: $(wc -l < "$ROOT/logs/queue.txt") units, $JOBS at a time; logs in $ROOT/logs/"
export CONFIG ROOT PY
# xargs appends each queue line (LABEL SEED) after the extra sweep arguments
# shellcheck disable=SC2016
xargs -P "$JOBS" -L 1 bash -c '
  args=("$@"); n=${#args[@]}
  label="${args[n-2]}" seed="${args[n-1]}"
  if "$PY" -m mmrobust_bench.cli sweep --config "$CONFIG" --root "$ROOT" --only "$label" --seeds "$seed" \
       --no-progress "${args[@]:0:n-2}" >> "$ROOT/logs/$label-s$seed.log" 2>&1; then
    echo "done   $label seed $seed"
  else
    echo "FAILED $label seed $seed: $ROOT/logs/$label-s$seed.log"
  fi' _ "$@" < "$ROOT/logs/queue.txt"
