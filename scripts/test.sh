#!/usr/bin/env bash
# The test command: set up, lint, run the test suite. Extra arguments go to pytest.
# Two pytest workers (BITMCU_TEST_WORKERS; 0 runs the suite in this process), each taking whole
# test files, so a file's module fixtures are built once.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check src tests benchmarks
set +e
.venv/bin/pytest -q -n "${BITMCU_TEST_WORKERS:-2}" --dist loadfile "$@"
rc=$?
set -e
if [ $rc -eq 5 ]; then
  echo "no tests were collected"
  exit 1
fi
exit $rc
