#!/usr/bin/env bash
# test/integration/preload.sh
#
# keysmith refuses to load unless it is in shared_preload_libraries: a
# second throwaway cluster without it gets a clear error and hint from
# CREATE EXTENSION and LOAD, and the backend stays up.
set -uo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
. "$ROOT/test/lib.sh"
ks_plan 5

dir=$KS_WORK/extra-nopreload
ks_cluster_init "$dir" no
ks_cluster_start "$dir"
ks_check $? "a cluster without keysmith preloaded starts"
out=$(PGHOST=$dir PGPORT=$KS_PORT psql -X -d postgres -U postgres -v VERBOSITY=verbose \
      -c 'CREATE EXTENSION keysmith' -c 'SELECT 42 AS alive' 2>&1)
echo "$out"
grep -q 'ERROR:  55000: keysmith must be loaded via shared_preload_libraries' <<<"$out"
ks_check $? "CREATE EXTENSION fails with SQLSTATE 55000 and a clear message"
grep -q 'HINT:  Add keysmith to shared_preload_libraries' <<<"$out"
ks_check $? "the error carries a hint"
grep -q '42' <<<"$out"
ks_check $? "the session survives"
out=$(PGHOST=$dir PGPORT=$KS_PORT psql -X -d postgres -U postgres -c "LOAD 'keysmith'" 2>&1)
grep -q 'keysmith must be loaded via shared_preload_libraries' <<<"$out"
ks_check $? "LOAD fails the same way"
ks_cluster_stop "$dir"
