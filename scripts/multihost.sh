#!/usr/bin/env bash
# The two-host rig by hand (tests/multihost.py), under the machine-wide e2e lock (taken here
# unless the caller holds it and says so with PYCNI_E2E_LOCK_HELD=1):
#   scripts/multihost.sh demo   two hosts up, a container on each on one overlay, a ping across,
#                               everything torn down
#   scripts/multihost.sh down   remove whatever an interrupted run left
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${PYCNI_E2E_LOCK_HELD:-}" = 1 ]; then
    exec .venv/bin/python -m tests.multihost "${1:-demo}"
fi
exec flock /run/lock/pycni-e2e.lock .venv/bin/python -m tests.multihost "${1:-demo}"
