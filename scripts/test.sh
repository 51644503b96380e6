#!/usr/bin/env bash
# The test command: set up, lint, run the test suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check src tests benchmarks
set +e
.venv/bin/pytest -q "$@"
rc=$?
set -e
if [ $rc -eq 5 ]; then
  echo "no tests were collected"
  exit 1
fi
exit $rc
