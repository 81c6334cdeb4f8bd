#!/usr/bin/env bash
# The long fault-injection form: every test under tests/chaos (the broker frozen and
# killed under a running pipeline, in both modes; connections cut through a proxy) and 20
# random SIGKILLs of the pipeline over 300 files, in each mode. Prints its seed;
# CHAOS_SEED=... replays a failure.
# Needs the set-up of scripts/test.sh (.venv, the broker jars). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
export CHAOS_KILLS=${CHAOS_KILLS:-20}
export CHAOS_FILES=${CHAOS_FILES:-300}
export CHAOS_SEED=${CHAOS_SEED:-$(.venv/bin/python -c 'import random; print(random.SystemRandom().randrange(1 << 32))')}
echo "chaos: CHAOS_SEED=$CHAOS_SEED CHAOS_KILLS=$CHAOS_KILLS CHAOS_FILES=$CHAOS_FILES"
echo "       (replay: CHAOS_SEED=$CHAOS_SEED bash scripts/chaos.sh)"
exec .venv/bin/python -m pytest -m chaos -p no:cacheprovider --timeout 3600 "$@" tests/chaos
