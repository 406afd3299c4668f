#!/usr/bin/env bash
# test/integration/demo_auth.sh
#
# Finding 12 of docs/security.md: `make demo` used to trust any local OS
# user as postgres over TCP.  The demo's cluster is now set up by
# ks_cluster_password (test/lib.sh): this test sets one up the same way and
# tries the attack, a TCP login as postgres from another OS user without the
# password, before showing that the password file works for its owner.
set -uo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
. "$ROOT/test/lib.sh"
ks_plan 6

dir=$KS_WORK/extra-demo-auth
pass=$KS_WORK/demo-auth.pgpass
ks_cluster_init "$dir"
ks_cluster_password "$dir" "$pass" root
ks_cluster_start "$dir"
. "$dir/env"

out=$(runuser -u nobody -- env PGPASSFILE=/dev/null psql -X -h 127.0.0.1 -p "$PGPORT" -U postgres -d postgres -c "SELECT 1" 2>&1)
[[ $out == *"fe_sendauth: no password supplied"* ]]; ks_check $? "attack: another OS user connects over TCP as postgres without a password, refused: ${out##*failed: }"
out=$(runuser -u nobody -- env PGPASSWORD=postgres psql -X -h 127.0.0.1 -p "$PGPORT" -U postgres -d postgres -c "SELECT 1" 2>&1)
[[ $out == *"password authentication failed for user \"postgres\""* ]]; ks_check $? "a guessed password is refused"
out=$(runuser -u nobody -- env PGPASSFILE="$pass" psql -X -h 127.0.0.1 -p "$PGPORT" -U postgres -d postgres -c "SELECT 1" 2>&1)
[ $? -ne 0 ]; ks_check $? "the password file is of no use to another OS user: ${out##*failed: }"
m=$(stat -c '%a %U' "$pass")
[ "$m" = "600 root" ]; ks_check $? "the password file is mode 0600, its owner's only ($m)"
r=$(PGPASSFILE=$pass psql -X -q -t -A -h 127.0.0.1 -p "$PGPORT" -U postgres -d postgres -c "SELECT current_user")
[ "$r" = postgres ]; ks_check $? "its owner logs in over TCP with it"
grep -q 'ks_cluster_password "$DEMO_DIR"' "$ROOT/test/harness.sh" && grep -q PGPASSFILE "$ROOT/test/harness.sh"
ks_check $? "make demo sets its cluster up this way and points demo.env at the file"

ks_cluster_stop "$dir"
