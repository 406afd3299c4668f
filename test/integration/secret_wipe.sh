#!/usr/bin/env bash
# test/integration/secret_wipe.sh
#
# Finding 14 of issue 20: plaintext left in a backend's memory on paths
# that end in an ERROR, or after a value was used and dropped.  keysmith
# keeps every key, password and plaintext in secret buffers
# (extension/common/secret_mem.h), wiped when their memory context is reset or
# deleted.  The attacks are performed, then the backend's private memory is
# read through /proc/<pid>/mem (test/integration/memscan.py) for what they
# left:
# - create_secret with a generated credential during a KMS outage (the
#   master key file unreadable), five times, as a client retrying would:
#   0.9 leaked one malloc'd {"username": ..., "password": ...} per attempt;
# - decrypt_value over 200 rows whose plaintexts are only compared, never
#   returned: 0.9 left them in freed memory;
# - decrypt_value of a value that is not valid UTF-8 (an ERROR).
# The plaintexts exist only in the table, encrypted, and in keysmith's
# buffers of the scanned backend: no query text of that backend holds them.
# Positive controls show the scan finds what it looks for: once a value has
# been sent to the client, PostgreSQL's own copies for the client (not
# keysmith's) are found.  Where /proc/<pid>/mem cannot be read (no
# CAP_SYS_PTRACE, as in a container) the scans are skipped, and say so.
set -uo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
. "$ROOT/test/lib.sh"
ks_plan 7

dir=$KS_WORK/extra-secret-wipe
ks_cluster_init "$dir"
ks_cluster_start "$dir"
. "$dir/env"
key=$dir/data/keysmith_master.key
scan=$ROOT/test/integration/memscan.py
CRED='\{"username": "wipe_app", "password": "[A-Za-z0-9]{32}"\}'
MARK='WIPEMARK[0-9a-f]{32}'

q <<'SQL' >/dev/null
CREATE EXTENSION keysmith;
SELECT keysmith.create_key('k');
CREATE ROLE wipe_app LOGIN;
CREATE TABLE t (i int, c bytea);
INSERT INTO t SELECT i, keysmith.encrypt_value('k', 'WIPEMARK' || md5(i::text)) FROM generate_series(1, 200) i;
INSERT INTO t VALUES (0, keysmith.encrypt_value('k', '\xfe57495045'::bytea));
SQL
ks_check $? "setup: a key, a login role, 200 encrypted values and one that is not UTF-8"

# session SQL: runs psql with the scanned backend's PID in $KS_PID for \!
session() {
    psql -X -q -t -A -d postgres 2>&1 <<SQL
SELECT pg_backend_pid() AS pid \gset
\setenv KS_PID :pid
$1
SQL
}
# skip_or_check STATUS OUTPUT NAME: a scan that could not read memory is a skip
skip_or_check() {
    if grep -q 'cannot read process\|was readable' <<<"$2"; then
        ks_check 0 "# SKIP $3: /proc/<pid>/mem is not readable here"
    else
        ks_check_out "$1" "$2" "$3"
    fi
}

# 1. a KMS outage at the seal: the new backend has no data key cached, and
# the master key file cannot be read
chmod 000 "$key"
out=$(session "
SELECT keysmith.create_secret('wipe', 'k', 'postgres_role', '{\"role\": \"wipe_app\"}');
SELECT keysmith.create_secret('wipe', 'k', 'postgres_role', '{\"role\": \"wipe_app\"}');
SELECT keysmith.create_secret('wipe', 'k', 'postgres_role', '{\"role\": \"wipe_app\"}');
SELECT keysmith.create_secret('wipe', 'k', 'postgres_role', '{\"role\": \"wipe_app\"}');
SELECT keysmith.create_secret('wipe', 'k', 'postgres_role', '{\"role\": \"wipe_app\"}');
\\! /usr/bin/python3 $scan \$KS_PID '$CRED'")
chmod 600 "$key"
n=$(grep -c 'ERROR:  could not open master key file' <<<"$out")
[ "$n" = 5 ]; ks_check_out $? "$out" "five create_secret calls fail at the seal while the master key file is unreadable ($n)"
found=$(tail -1 <<<"$out")
[ "$found" = 0 ]; skip_or_check $? "$out" "no generated credential is left in the backend after the five failures (found $found)"

# 2. plaintexts compared and dropped, and one that fails as text
out=$(session "
SELECT count(*) FROM t WHERE i > 0 AND keysmith.decrypt_value(c) LIKE 'no such value%';
\\! /usr/bin/python3 $scan \$KS_PID '$MARK'")
found=$(tail -1 <<<"$out")
[ "$(head -1 <<<"$out")" = 0 ] && [ "$found" = 0 ]
skip_or_check $? "$out" "200 values decrypted and compared leave no plaintext in the backend (found $found)"

out=$(session "
SELECT keysmith.decrypt_value(c) FROM t WHERE i = 0;
\\! /usr/bin/python3 $scan \$KS_PID '\\xfeWIPE'")
found=$(tail -1 <<<"$out")
grep -q 'ERROR:  decrypted value is not valid in encoding "UTF8"' <<<"$out" && [ "$found" = 0 ]
skip_or_check $? "$out" "a decrypted value refused as text (22021) is wiped on that ERROR (found $found)"

# positive controls: what PostgreSQL sends to the client stays in its memory
out=$(session "
SELECT keysmith.decrypt_value(c) IS NOT NULL FROM t WHERE i = 1;
SELECT keysmith.decrypt_value(c) FROM t WHERE i = 1;
\\! /usr/bin/python3 $scan \$KS_PID '$MARK'")
found=$(tail -1 <<<"$out")
[ "$found" -ge 1 ] 2>/dev/null
skip_or_check $? "$out" "positive control: a value sent to the client is found by the scan ($found copies, PostgreSQL's)"

out=$(session "
SELECT keysmith.create_secret('wipe', 'k', 'postgres_role', '{\"role\": \"wipe_app\"}') IS NOT NULL;
\\! /usr/bin/python3 $scan \$KS_PID '$CRED'
SELECT keysmith.get_secret('wipe') IS NOT NULL;
SELECT keysmith.get_secret('wipe');
\\! /usr/bin/python3 $scan \$KS_PID '$CRED'")
before=$(sed -n 2p <<<"$out")
found=$(tail -1 <<<"$out")
[ "$before" = 0 ] && [ "$found" -ge 1 ] 2>/dev/null
skip_or_check $? "$out" "with the key file back: create_secret leaves no credential ($before); once get_secret sent it to the client, the scan finds it ($found)"

ks_cluster_stop "$dir"
