#!/usr/bin/env bash
# The whole suite, as `make test` and CI run it. pytest's exit code 5 (no tests collected)
# is a failure here, never a silent pass.
set -uo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
"$VENV/bin/ruff" check . || exit 1
"$VENV/bin/python" -m pytest "$@"
rc=$?
if [ "$rc" -eq 5 ]; then
  echo "run_all: pytest collected no tests; that is a failure" >&2
  exit 1
fi
exit "$rc"
