#!/usr/bin/env bash
# test/integration/reencrypt_concurrent.sh
#
# keysmith.reencrypt over 200,000 rows while another session keeps
# inserting and updating the same table; the re-encrypting backend is
# terminated mid-way and the procedure is called again.  Afterwards every row
# decrypts to what its writer last wrote (the writer keeps the plaintext in
# a side column, updated in the same statement) and every value is on the
# key's current version.
set -uo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
ks_plan 9
. "$KS_CLUSTER/env"
KS_DB=ks_reenc    # of q (test/lib.sh)

psql -X -q -d postgres -c 'DROP DATABASE IF EXISTS ks_reenc' -c 'CREATE DATABASE ks_reenc'
q <<'SQL'
CREATE EXTENSION keysmith;
SELECT keysmith.create_key('re');
CREATE TABLE t (id int PRIMARY KEY, plain text NOT NULL, c bytea NOT NULL);
INSERT INTO t SELECT i, 'p' || i, keysmith.encrypt_value('re', 'p' || i, 'id:' || i)
  FROM generate_series(1, 200000) i;
SELECT keysmith.rotate_dek('re');
CREATE TABLE writer_stop (stop boolean);
CREATE TABLE writer_count (n int);
SQL
ks_check $? "200,000 rows under version 1, key rotated to version 2"

# the concurrent writer: updates random rows and inserts new ones, one
# transaction each, until told to stop
q -c "DO \$\$
DECLARE k int := 0;
BEGIN
    LOOP
        k := k + 1;
        UPDATE t SET plain = 'w' || k, c = keysmith.encrypt_value('re', 'w' || k, 'id:' || id)
         WHERE id = 1 + (random() * 199999)::int;
        INSERT INTO t VALUES (200000 + k, 'new' || k, keysmith.encrypt_value('re', 'new' || k, 'id:' || (200000 + k)));
        COMMIT;
        EXIT WHEN k >= 100000 OR EXISTS (SELECT 1 FROM writer_stop);
    END LOOP;
    INSERT INTO writer_count VALUES (k);
END \$\$" &
writer=$!

q -c "CALL keysmith.reencrypt('t', 'c', 5000, \$\$'id:' || id\$\$)" >"$KS_WORK/reenc1.log" 2>&1 &
first=$!
done_rows=0
for _ in $(seq 1 600); do
    done_rows=$(q -c "SELECT coalesce((SELECT rows_done FROM keysmith.reencrypt_progress WHERE table_name = 't'::regclass), 0)")
    [ "$done_rows" -ge 60000 ] && break
    sleep 0.1
done
killed=$(q -c "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE query LIKE 'CALL keysmith.reencrypt%' AND pid <> pg_backend_pid()")
wait $first
[ "$killed" = 1 ] && [ "$done_rows" -ge 60000 ]; ks_check $? "the re-encrypting backend is terminated after $done_rows rows"
sleep 0.5
state=$(q -c "SELECT state || ' ' || rows_done FROM keysmith.reencrypt_progress WHERE table_name = 't'::regclass")
echo "# progress after the kill: $state"
[ "${state%% *}" = interrupted ]; ks_check $? "reencrypt_progress shows the job as interrupted"
left=$(q -c "SELECT count(*) FROM t WHERE keysmith.ciphertext_needs_reencrypt(c)")
[ "$left" -gt 0 ]; ks_check $? "work remains after the kill ($left rows)"

q -c "CALL keysmith.reencrypt('t', 'c', 5000, \$\$'id:' || id\$\$)"
ks_check $? "a second CALL runs to completion"
state=$(q -c "SELECT state || ' ' || rows_done || ' ' || rows_left FROM keysmith.reencrypt_progress WHERE table_name = 't'::regclass")
echo "# progress after the second call: $state"
[ "${state%% *}" = done ]; ks_check $? "the job is done"

q -c "INSERT INTO writer_stop VALUES (true)"
wait $writer
writes=$(q -c "SELECT n FROM writer_count")
[ -n "$writes" ] && [ "$writes" -gt 0 ]; ks_check $? "the writer ran concurrently throughout ($writes transactions)"

bad=$(q -c "SELECT count(*) FROM t WHERE keysmith.decrypt_value(c, 'id:' || id) IS DISTINCT FROM plain")
total=$(q -c "SELECT count(*) FROM t")
[ "$bad" = 0 ]; ks_check $? "every row decrypts to what its writer last wrote ($total rows, $bad wrong)"
usage=$(q -c "SELECT string_agg(key_version || ':' || is_current || ':' || rows, ',') FROM keysmith.key_version_usage('t', 'c')")
echo "# usage: $usage"
[ "$usage" = "2:true:$total" ]; ks_check $? "every value is on the current version"

psql -X -q -d postgres -c 'DROP DATABASE ks_reenc'
