#!/usr/bin/env bash
# The search loop's work per job and the dashboard's rebuild at 10,000 experiments, old and new side
# alternating (single measurements move from run to run; see docs/BENCHMARKS.md, issue 15):
#   benchmarks/scale_alternate.sh OLD/src [CACHE] [ROUNDS]
# OLD/src: src/ of another checkout (e.g. `git archive main | tar -x -C OLD`). CACHE: where
# benchmarks/synthetic_run.py keeps its runs (built once). A side from before schema 0003 reads a copy of
# the run with the 0003 index dropped (its own schema), as benchmarks/scale.py does.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
old_src="$(cd "$1" && pwd)"; cache="${2:-${TMPDIR:-/tmp}/idealab-scale}"; rounds="${3:-4}"
new_src="$here/../src"
py="${PYTHON:-python3}"
unset PYTHONDONTWRITEBYTECODE
export PYTHONPYCACHEPREFIX="${TMPDIR:-/tmp}/idealab-scale-pycache"
PYTHONPATH="$new_src" "$py" "$here/synthetic_run.py" --cache "$cache" --sizes 10000 > /dev/null
run="$(ls -d "$cache"/v*/n10000 | sort -V | tail -1)"
scratch="$(mktemp -d)"; trap 'rm -rf "$scratch"' EXIT
old_run="$run"
if [ ! -f "$old_src/idealab/store/migrations/versions/0003_llm_call_listing.py" ]; then
  old_run="$scratch/schema-0002/n10000"; mkdir -p "$scratch/schema-0002"; cp -a "$run" "$old_run"
  "$py" -c "import sqlite3, sys; c = sqlite3.connect(sys.argv[1], isolation_level=None)
c.execute('DROP INDEX IF EXISTS ix_llm_calls_listing'); c.execute(\"UPDATE alembic_version SET version_num = '0002'\")" "$old_run/idealab.db"
fi
probe() { (cd "$here" && PYTHONPATH="$1" "$py" scale_probe.py "${@:2}" | tail -1); }
for i in $(seq "$rounds"); do
  echo "loop new $(probe "$new_src" loop "$run" "$scratch" 20)"
  echo "loop old $(probe "$old_src" loop "$old_run" "$scratch" 20)"
done
for i in 1 2; do
  echo "dashboard new $(probe "$new_src" dashboard "$run")"
  echo "dashboard old $(probe "$old_src" dashboard "$old_run")"
done
