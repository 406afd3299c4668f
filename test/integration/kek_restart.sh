#!/usr/bin/env bash
# test/integration/kek_restart.sh
#
# On a cluster of its own: the master key file gains a version by hand,
# rotate_kek re-wraps every DEK under it, the server restarts and everything
# decrypts; the old master-key version is removed from the file and
# everything still decrypts.  Also: encryption counters survive a clean
# restart exactly; after a crash (SIGKILL) the count of a version is not
# known, and the key rolls over instead of encrypting under it again.
set -uo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
. "$ROOT/test/lib.sh"
ks_plan 13

dir=$KS_WORK/extra-kek
ks_cluster_init "$dir"
ks_cluster_start "$dir"
. "$dir/env"
keyfile=$dir/data/keysmith_master.key

q <<'SQL'
CREATE EXTENSION keysmith;
SELECT keysmith.create_key('k1');
SELECT keysmith.create_key('k2');
SELECT keysmith.rotate_dek('k2');
CREATE TABLE t (id int PRIMARY KEY, plain text, c bytea);
INSERT INTO t SELECT i, 'v' || i,
       keysmith.encrypt_value(CASE WHEN i % 2 = 0 THEN 'k1' ELSE 'k2' END, 'v' || i, 'id:' || i)
  FROM generate_series(1, 1000) i;
SQL
ks_check $? "two keys, three DEK versions, 1,000 rows under master key 1"

# the file gains version 2 by hand, as an operator would add it
ks_as_pg sh -c "printf '2:%s\n' \$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n') >> '$keyfile'"
r=$(q -c "SELECT keysmith.rotate_kek('k1') + keysmith.rotate_kek('k2')")
[ "$r" = 3 ]; ks_check $? "rotate_kek re-wraps all three DEK versions ($r)"
usage=$(q -c "SELECT string_agg(version || ':' || wrapped_dek_versions, ',' ORDER BY version) FROM keysmith.local_master_keys()")
[ "$usage" = "1:0,2:3" ]; ks_check $? "local_master_keys: nothing left under version 1 ($usage)"

ks_cluster_stop "$dir"
ks_cluster_start "$dir"
ks_check $? "the server restarts"
bad=$(q -c "SELECT count(*) FROM t WHERE keysmith.decrypt_value(c, 'id:' || id) IS DISTINCT FROM plain")
[ "$bad" = 0 ]; ks_check $? "after the restart every row decrypts"

# remove master key version 1 from the file
ks_as_pg sh -c "grep -v '^1:' '$keyfile' > '$keyfile.new' && chmod 600 '$keyfile.new' && mv '$keyfile.new' '$keyfile'"
grep -q '^1:' "$keyfile"; [ $? -ne 0 ]; ks_check $? "master key version 1 is gone from the file"
bad=$(q -c "SELECT count(*) FROM t WHERE keysmith.decrypt_value(c, 'id:' || id) IS DISTINCT FROM plain")
[ "$bad" = 0 ]; ks_check $? "every row still decrypts (fresh backend, DEKs unwrapped under version 2)"
ks_cluster_stop "$dir"
ks_cluster_start "$dir"
bad=$(q -c "SELECT count(*) FROM t WHERE keysmith.decrypt_value(c, 'id:' || id) IS DISTINCT FROM plain")
[ "$bad" = 0 ]; ks_check $? "and after another restart"
usage=$(q -c "SELECT string_agg(version || ':' || in_file || ':' || wrapped_dek_versions, ',' ORDER BY version) FROM keysmith.local_master_keys()")
[ "$usage" = "2:true:3" ]; ks_check $? "local_master_keys lists only version 2 ($usage)"

# counters: exact across a clean restart, never guessed after a crash
q -c "SELECT keysmith.create_key('cnt')" >/dev/null
q -c "SELECT count(keysmith.encrypt_value('cnt', 'x')) FROM generate_series(1, 300)" >/dev/null
before=$(q -c "SELECT current_version_encryptions FROM keysmith.keys WHERE name = 'cnt'")
ks_cluster_stop "$dir"
ks_cluster_start "$dir"
after=$(q -c "SELECT current_version_encryptions FROM keysmith.keys WHERE name = 'cnt'")
[ "$before" = 300 ] && [ "$after" = 300 ]; ks_check $? "the encryption count is exact across a clean restart ($before before, $after after)"
q -c "SELECT count(keysmith.encrypt_value('cnt', 'x')) FROM generate_series(1, 50)" >/dev/null
# a real crash: SIGKILL the postmaster and its children, no shutdown code runs
ks_cluster_kill9 "$dir"
ks_cluster_start "$dir"
ks_check $? "the server restarts after being killed with SIGKILL"
crash=$(q -c "SELECT coalesce(current_version_encryptions::text, 'unknown') FROM keysmith.keys WHERE name = 'cnt'")
[ "$crash" = unknown ]; ks_check $? "after a crash this server does not know the count of version 1 ($crash): it is not guessed"
q -c "SELECT count(keysmith.encrypt_value('cnt', 'x')) FROM generate_series(1, 20)" >/dev/null
r=$(q -c "SELECT current_version || ':' || current_version_encryptions FROM keysmith.keys WHERE name = 'cnt'" \
      -c "SELECT count(*) FROM keysmith.key_event WHERE key_name = 'cnt' AND event = 'rollover'
                AND detail = 'this server does not know how often version 1 was used'" | tr '\n' ' ')
[ "$r" = "2:20 1 " ]; ks_check $? "so the next encryption rolls the key over, audited, and version 1 is never used again ($r)"

ks_cluster_stop "$dir"
