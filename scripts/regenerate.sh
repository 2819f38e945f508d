#!/usr/bin/env bash
# Regenerate a leaderboard's rows on JOBS cores: one `mmrobust-bench sweep` process per (entry, seed) unit of
# the sweep YAML (`--only LABEL --seeds SEED`), JOBS at a time, the labels named in $FIRST first so the
# slowest units do not leave one core working alone at the end. Every process is the leaderboard's sweep
# command restricted to one unit: all write the same ROOT (the result store's lock merges their rows) and
# rerunning this script resumes the regeneration (finished cells are skipped, a cell under way resumes at its
# next batch). Each unit's log: ROOT/logs/LABEL-sSEED.log. Exits 1 when a unit fails (each is named).
# `mmrobust-bench sweep --config CONFIG --root ROOT --status` says how far it has got.
#
#   FIRST=msefm,crmt_mmt bash scripts/regenerate.sh leaderboards/synthav/sweep.yaml leaderboards/synthav/runs 2
#   bash scripts/regenerate.sh CONFIG ROOT JOBS --dataset-set data_root=FSDD/recordings   # extra sweep args
set -euo pipefail
if [ $# -lt 3 ]; then
  echo "usage: [FIRST=label,...] bash scripts/regenerate.sh CONFIG ROOT JOBS [extra sweep arguments]" >&2
  exit 2
fi
CONFIG="$1" ROOT="$2" JOBS="$3"
shift 3
fail() { echo "regenerate.sh: $*" >&2; exit 2; }
[ -f "$CONFIG" ] || fail "no sweep YAML at $CONFIG; give the leaderboard's sweep.yaml"
[[ "$JOBS" =~ ^[1-9][0-9]*$ ]] || fail "JOBS must be a whole number >= 1 (processes at once), got '$JOBS'"
for arg in "$@"; do
  case "$arg" in
    --only|--only=*|--skip|--skip=*|--seeds|--seeds=*|--shard|--shard=*|--executor|--executor=*|--status)
      fail "$arg would change which units each process runs; this script gives every process one unit" ;;
  esac
done
# $PYTHON: another interpreter with mmrobust-bench installed (default: the repository's .venv)
PY="${PYTHON:-$(cd "$(dirname "$0")/.." && pwd)/.venv/bin/python}"
command -v "$PY" >/dev/null || fail "no $PY; run 'bash scripts/install.sh' first"
mkdir -p "$ROOT/logs"
# "LABEL SEED" per unit in the YAML's order, the labels of $FIRST moved to the front in the order given
"$PY" - "$CONFIG" "${FIRST:-}" <<'EOF' > "$ROOT/logs/queue.txt"
import re
import sys

from mmrobust_bench.bench.sweep import build_plan, load_sweep_config

try:
    plan = build_plan(load_sweep_config(sys.argv[1]))
except ValueError as exc:  # the sweep's own one-line message
    print(f"regenerate.sh: {exc}", file=sys.stderr)
    sys.exit(2)
first = [label.strip() for label in sys.argv[2].split(",") if label.strip()]
units = [(entry.label, seed) for entry, seed in plan.work_units()]
problems = []
unknown = sorted(set(first) - {label for label, _ in units})
if unknown:
    problems.append(f"FIRST names {', '.join(unknown)}, not an entry of {sys.argv[1]}; use its labels")
odd = sorted({label for label, _ in units if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.+-]*", label)})
if odd:
    problems.append(f"label(s) {', '.join(map(repr, odd))} cannot name a log file; use letters, digits, _ . + -")
if problems:
    print("regenerate.sh: " + "; ".join(problems), file=sys.stderr)
    sys.exit(2)
rank = {label: i for i, label in enumerate(first)}
for label, seed in sorted(units, key=lambda u: rank.get(u[0], len(first))):
    print(label, seed)
EOF
echo "regenerate.sh: $(wc -l < "$ROOT/logs/queue.txt") units, $JOBS at a time; logs in $ROOT/logs/"
export CONFIG ROOT PY
# xargs appends each queue line (LABEL SEED) after the extra sweep arguments; a unit that fails exits 1, so
# xargs runs the others and then exits non-zero
# shellcheck disable=SC2016
xargs -P "$JOBS" -L 1 bash -c '
  args=("$@"); n=${#args[@]}
  label="${args[n-2]}" seed="${args[n-1]}"
  if "$PY" -m mmrobust_bench.cli sweep --config "$CONFIG" --root "$ROOT" --only "$label" --seeds "$seed" \
       "${args[@]:0:n-2}" >> "$ROOT/logs/$label-s$seed.log" 2>&1; then
    echo "done   $label seed $seed"
  else
    echo "FAILED $label seed $seed: $ROOT/logs/$label-s$seed.log"
    exit 1
  fi' _ "$@" < "$ROOT/logs/queue.txt" || { echo "regenerate.sh: some units failed (FAILED above)" >&2; exit 1; }
