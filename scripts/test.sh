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
# with the optional extras, so that plots, DataFrames, the cluster tools and the results
# page are tested too
.venv/bin/python -m pip install --quiet -e ".[dev,plots,results,cluster,web]"
# the results page's browser test drives the system's Chromium (Debian's packages); if it
# cannot be installed here, that test fails saying so and the others still run
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
  if command -v apt-get >/dev/null && [[ $(id -u) == 0 ]]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver >/dev/null \
      || echo "could not install chromium and chromium-driver: the browser test will fail" >&2
  else
    echo "chromium and chromium-driver are not installed (apt-get install chromium" \
      "chromium-driver, as root): the browser test will fail" >&2
  fi
fi
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
