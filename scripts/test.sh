#!/usr/bin/env bash
# Set everything up on a fresh clone and run the checks and the whole test suite:
# a virtualenv in .venv, the package with its dev tools, the Apache Kafka broker jars
# (fetched once with Maven into ~/.cache/ray-reproducer), then ruff, mypy and pytest.
# The integration tests start their own broker, or use $KAFKA_BOOTSTRAP_SERVERS if set.
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -m "not integration"`.
set -euo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-python3}
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 10))'; then
  echo "ray-reproducer needs Python >= 3.10 (found: $("$python" --version 2>&1)); set PYTHON=..." >&2
  exit 1
fi
[[ -x .venv/bin/python ]] || "$python" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
# with the optional extras, so that plots, DataFrames and the cluster tools are tested too
.venv/bin/python -m pip install --quiet -e ".[dev,plots,results,cluster]"
# a lab's own package of analyses, installed apart: found by its entry point in the tests
.venv/bin/python -m pip install --quiet ./tests/data/lab_analyses
.venv/bin/python -m cluster.broker --fetch-only

echo "== ruff"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
echo "== mypy"
.venv/bin/mypy
echo "== pytest"
.venv/bin/python -m pytest "$@"
