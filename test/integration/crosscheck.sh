#!/usr/bin/env bash
# test/integration/crosscheck.sh: runs crosscheck.py with Debian's python3
# (its python3-cryptography) against the suite's cluster.
set -euo pipefail
. "$KS_CLUSTER/env"
exec /usr/bin/python3 "$(dirname "$0")/crosscheck.py" "$KS_CLUSTER/data/keysmith_master.key"
