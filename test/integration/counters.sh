#!/usr/bin/env bash
# test/integration/counters.sh
#
# Encryption counters at scale, on a cluster of its own
# (extension/keys/counters.c, docs/format.md "Encryption counts"):
#   - 17,000 keys each encrypt under their first version: more than the
#     16,384 versions 0.10 could count, with no rollover (each version's
#     counter starts in the transaction that makes it);
#   - with keysmith.counter_slots = 64, the counts that do not fit are
#     forgotten, and each such key rolls over once, audited, instead of
#     encrypting under a version whose count is not known;
#   - max_encryptions_per_dek = 5: no version ever passes 5 encryptions,
#     across a clean restart (which resumes the exact count) and a crash
#     (after which the count is unknown and the key rolls over);
#   - the counts written at a clean shutdown are removed when the server
#     starts, so a crash later cannot bring them back;
#   - a counter file written by 0.10 is read as upper bounds;
#   - counts left by an aborted transaction for the version numbers it
#     made do not stop the key from rolling past them.
set -uo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
. "$ROOT/test/lib.sh"
ks_plan 10

dir=$KS_WORK/extra-counters
ks_cluster_init "$dir"
# commits must survive the crashes below (the suite turns this off for speed)
printf "keysmith.counter_slots = 20000\nsynchronous_commit = on\n" >>"$dir/data/postgresql.conf"
ks_cluster_start "$dir"
. "$dir/env"

q <<'SQL' >/dev/null
CREATE EXTENSION keysmith;
SELECT count(keysmith.create_key('t' || i)) FROM generate_series(1, 17000) i;
CREATE TABLE vals (k text, c bytea);
SQL
out=$(qv -c "INSERT INTO vals SELECT 't' || i, keysmith.encrypt_value('t' || i, 'v' || i) FROM generate_series(1, 17000) i" 2>&1)
r=$(q -c "SELECT count(*) FILTER (WHERE keysmith.decrypt_value(c) = 'v' || substr(k, 2)) FROM vals" \
      -c "SELECT count(*) FROM keysmith.key_event WHERE event = 'rollover'" \
      -c "SELECT count(*) FROM keysmith.keys WHERE name LIKE 't%' AND current_version_encryptions = 1" | tr '\n' ' ')
[ "$r" = "17000 0 17000 " ]
ks_check_out $? "$out" "17,000 keys encrypt under their first versions, counted, with no rollover (decrypted, rollovers, counted: $r)"

# a table smaller than the keys in use: forgotten counts roll over, once each
sed -i 's/^keysmith.counter_slots = 20000$/keysmith.counter_slots = 64/' "$dir/data/postgresql.conf"
ks_cluster_stop "$dir"
ks_cluster_start "$dir"
[ ! -e "$dir/data/keysmith_counters" ]
ks_check $? "the counts written at the clean shutdown are gone from the data directory once the server runs"
q -c "SELECT count(keysmith.encrypt_value('t' || i, 'again')) FROM generate_series(1, 200) i" >/dev/null
r=$(q -c "SELECT count(*), max(n), min(n) FROM (SELECT key_name, count(*) n FROM keysmith.key_event
            WHERE event = 'rollover' AND detail LIKE 'this server does not know how often version 1 was used'
            GROUP BY key_name) s" \
      -c "SELECT count(*) FROM keysmith.keys WHERE name LIKE 't%' AND current_version > 2")
IFS='|' read -r rolled most least <<<"$(head -1 <<<"$r")"
[ "$rolled" -ge 136 ] && [ "$most" = 1 ] && [ "$(tail -1 <<<"$r")" = 0 ]
ks_check $? "with 64 counters, the 200 keys whose counts were not kept roll over once each, audited ($rolled rolled, at most $most each)"

# the limit, across a clean restart and a crash
q -c "SELECT keysmith.create_key('lim')" >/dev/null
enc() { q -c "SET keysmith.max_encryptions_per_dek = 5" \
            -c "INSERT INTO vals SELECT 'lim', keysmith.encrypt_value('lim', 'x') FROM generate_series(1, $1)" >/dev/null; }
per_version() { q -c "SELECT string_agg(n::text, ',' ORDER BY v) FROM (SELECT (keysmith.ciphertext_info(c)).key_version v, count(*) n
                                                                     FROM vals WHERE k = 'lim' GROUP BY 1) s"; }
enc 12
r=$(per_version)
[ "$r" = "5,5,2" ]; ks_check $? "max_encryptions_per_dek = 5: 12 encryptions make versions of 5, 5 and 2 ($r)"
ks_cluster_stop "$dir"
ks_cluster_start "$dir"
enc 4
r=$(per_version)
[ "$r" = "5,5,5,1" ]; ks_check $? "a clean restart resumes the exact count: 4 more fill version 3 and start version 4 ($r)"
ks_cluster_kill9 "$dir"
ks_cluster_start "$dir"
u=$(q -c "SELECT coalesce(current_version_encryptions::text, 'unknown') FROM keysmith.keys WHERE name = 'lim'")
enc 2
r=$(per_version)
[ "$u" = unknown ] && [ "$r" = "5,5,5,1,2" ]
ks_check $? "after a crash version 4's count is unknown ($u), so the key moves to version 5 instead of guessing ($r)"

# a clean shutdown, a start (reads and removes the file), a crash: the
# counts of the first shutdown must not come back
ks_cluster_stop "$dir"
ks_cluster_start "$dir"
enc 1
ks_cluster_kill9 "$dir"
ks_cluster_start "$dir"
enc 1
r=$(per_version)
[ "$r" = "5,5,5,1,3,1" ]
ks_check $? "a crash after a clean restart does not reload the counts of that restart: version 5 (3 used) is left ($r)"
v=$(q -c "SELECT count(*) FROM keysmith.key_versions WHERE key_name = 'lim'")
[ "$v" = 6 ]; ks_check $? "and no version was skipped or reused ($v versions)"

# a 0.10 counter file: its records are upper bounds (there, a reservation)
q -c "SELECT keysmith.create_key('old')" >/dev/null
dbid=$(q -c "SELECT oid FROM pg_database WHERE datname = current_database()")
kid=$(q -c "SELECT key_id FROM keysmith.key WHERE name = 'old'")
ks_cluster_kill9 "$dir"
/usr/bin/python3 - "$dir/data/keysmith_counters" "$dbid" "$kid" <<'PY'
import struct, sys
path, dbid, kid = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
with open(path, 'wb') as f:
    f.write(struct.pack('<II', 0x4B53434E, 1))
    f.write(struct.pack('<IiiIQ', dbid, kid, 1, 0, 4))
PY
chown "$PG_OSUSER": "$dir/data/keysmith_counters"
ks_cluster_start "$dir"
c=$(q -c "SELECT current_version_encryptions FROM keysmith.keys WHERE name = 'old'")
q -c "SET keysmith.max_encryptions_per_dek = 5" -c "INSERT INTO vals SELECT 'old', keysmith.encrypt_value('old', 'x') FROM generate_series(1, 3)" >/dev/null
r=$(q -c "SELECT string_agg(n::text, ',' ORDER BY v) FROM (SELECT (keysmith.ciphertext_info(c)).key_version v, count(*) n
                                                          FROM vals WHERE k = 'old' GROUP BY 1) s")
[ "$c" = 4 ] && [ "$r" = "1,2" ]
ks_check $? "a 0.10 counter file's count (4) is taken: with a limit of 5, one more under version 1, then version 2 ($c; $r)"

# a keysmith user with encrypt only: one aborted transaction fills versions
# 2 to 5, which it made and lost, and their counts stay (the larger is
# kept); the next encryption must roll past them, not give up and abort
q <<'SQL' >/dev/null
CREATE ROLE eve LOGIN;
GRANT keysmith_user TO eve;
ALTER ROLE eve SET keysmith.max_encryptions_per_dek = 5;
SELECT keysmith.create_key('poison');
SELECT keysmith.grant_key('poison', 'eve', 'encrypt');
SQL
PGUSER=eve q -c "BEGIN" -c "SELECT count(keysmith.encrypt_value('poison', 'x')) FROM generate_series(1, 25)" -c "ROLLBACK" >/dev/null
out=$(qv -c "SET keysmith.max_encryptions_per_dek = 5" \
         -c "SELECT (keysmith.ciphertext_info(keysmith.encrypt_value('poison', 'app'))).key_version")
n=$(q -c "SELECT count(*) FROM keysmith.key_versions WHERE key_name = 'poison'")
[ "$out" = 6 ] && [ "$n" = 6 ]
ks_check_out $? "$out" "after a keysmith user's aborted transaction filled versions 2 to 5, the next encryption rolls past them to version 6 ($out; $n versions)"

ks_cluster_stop "$dir"
