#!/usr/bin/env bash
# Set everything up (all extras + test tools) and run lint, type checks and the test suite.
# Usage: bash scripts/test.sh [pytest options]
source "$(dirname "$0")/_env.sh" test
ruff check pyhf_dask tests benchmarks examples
ruff format --check pyhf_dask tests benchmarks examples
mypy
set +e
python -m pytest "$@"
status=$?
set -e
if [ "$status" -eq 5 ]; then
  echo "pytest collected no tests: failing" >&2
fi
exit "$status"
