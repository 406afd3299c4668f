#!/usr/bin/env bash
# test/integration/big_values.sh
#
# Values of 1 MB and 50 MB through every value and secret function
# (finding 2 of issue 20: get_secret of a value of about 100 kB and up read
# memory that SPI_finish had freed, and crashed the server).  Each value
# must come back byte for byte (compared by length and md5): encrypt_value
# and decrypt_value (text and bytea), rewrap_value, create_secret,
# put_secret_value, get_secret (current and previous), get_secret_version,
# and a rotation by the worker of a secret whose current value is 1 MB.
# Values beyond a documented limit get a clear error with its SQLSTATE: a
# credential password over 1024 bytes (22023), a value over the envelope's
# largest plaintext (54000), and a strategy none secret is never rotated
# (22023), nor by a rotation row written by hand.  No server process may crash: the checkpointer's PID stays the
# same (a crash restarts every process; pg_postmaster_start_time() does not
# change then) and the log has no crash.  Under make test SANITIZE=1 the
# server runs with ASan, which reports the use after free of the unfixed
# code at once (docs/testing.md, "Sanitizers").  The backend's peak memory
# for a 50 MB get_secret is printed as a comment.
set -uo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
. "$ROOT/test/lib.sh"
ks_plan 12

dir=$KS_WORK/extra-big-values
ks_cluster_init "$dir"
echo "keysmith.rotation_naptime = '200ms'" >>"$dir/data/postgresql.conf"
ks_cluster_start "$dir"
. "$dir/env"
checkpointer() { q -c "SELECT pid FROM pg_stat_activity WHERE backend_type = 'checkpointer'"; }
cp0=$(checkpointer)

# src holds the values (stored uncompressed) and their digests; the 1 MB
# value is 32768 random md5s, the 50 MB one that 1 MB value 50 times, each
# copy prefixed by its number, so that a shifted or repeated block shows
q <<'SQL' >/dev/null
CREATE EXTENSION keysmith;
SELECT keysmith.create_key('big');
CREATE TABLE src (n text PRIMARY KEY, v text NOT NULL, len int, h text);
ALTER TABLE src ALTER COLUMN v SET STORAGE EXTERNAL;
INSERT INTO src (n, v) SELECT 'm1', string_agg(md5(random()::text), '') FROM generate_series(1, 32768);
INSERT INTO src (n, v)
    WITH b AS MATERIALIZED (SELECT left(v, 1048576 - 4) AS blk FROM src WHERE n = 'm1')
    SELECT 'm50', string_agg(lpad(i::text, 4, '0') || b.blk, '' ORDER BY i) FROM b, generate_series(1, 50) i;
UPDATE src SET len = length(v), h = md5(v);
SQL
ks_check $? "setup: a key, and values of 1 MB and 50 MB"
lens=$(q -c "SELECT string_agg(len::text, ' ' ORDER BY n) FROM src")
echo "# value sizes: $lens"

# same(EXPR, NAME): does EXPR, evaluated for the value NAME of src (as v),
# give back that value byte for byte?
same() {
    q -c "SELECT length(r) = src.len AND md5(r) = src.h FROM src, LATERAL (SELECT $1 AS r) x WHERE src.n = '$2'"
}

ok=$( { same "keysmith.decrypt_value(keysmith.encrypt_value('big', v, 'ctx'), 'ctx')" m1
        same "keysmith.decrypt_value(keysmith.encrypt_value('big', v, 'ctx'), 'ctx')" m50; } | tr -d '\n')
[ "$ok" = tt ]; ks_check $? "encrypt_value and decrypt_value: 1 MB and 50 MB come back byte for byte ($ok)"

ok=$( { same "convert_from(keysmith.decrypt_value_bytea(keysmith.encrypt_value('big', convert_to(v, 'UTF8'))), 'UTF8')" m1
        same "convert_from(keysmith.decrypt_value_bytea(keysmith.encrypt_value('big', convert_to(v, 'UTF8'))), 'UTF8')" m50; } | tr -d '\n')
[ "$ok" = tt ]; ks_check $? "bytea: encrypt_value and decrypt_value_bytea, 1 MB and 50 MB ($ok)"

# (ciphertext is incompressible: stored EXTERNAL, pglz does not try)
ok=$(q -c "CREATE TEMP TABLE ct (n text, c bytea)" -c "ALTER TABLE ct ALTER COLUMN c SET STORAGE EXTERNAL" \
       -c "INSERT INTO ct SELECT n, keysmith.encrypt_value('big', v) FROM src" \
       -c "SELECT keysmith.rotate_dek('big')" \
       -c "SELECT bool_and((keysmith.ciphertext_info(w)).key_version = 2
                   AND length(keysmith.decrypt_value(w)) = src.len AND md5(keysmith.decrypt_value(w)) = src.h)
           FROM ct JOIN src USING (n), LATERAL (SELECT keysmith.rewrap_value(c) AS w) x" | tail -1)
[ "$ok" = t ]; ks_check $? "rewrap_value moves 1 MB and 50 MB values to the new DEK version, byte for byte ($ok)"

v1=$(q -c "SELECT keysmith.create_secret('s1', 'big', 'none', '{}', v) FROM src WHERE n = 'm1'")
q -c "SELECT keysmith.create_secret('s50', 'big', 'none', '{}', v) FROM src WHERE n = 'm50'" >/dev/null
ok=$( { same "keysmith.get_secret('s1')" m1; same "keysmith.get_secret('s50')" m50; } | tr -d '\n')
[ "$ok" = tt ]; ks_check $? "create_secret and get_secret: 1 MB and 50 MB, byte for byte ($ok)"

q -c "SELECT keysmith.put_secret_value('s1', v) FROM src WHERE n = 'm50'" >/dev/null
ok=$( { same "keysmith.get_secret('s1')" m50; same "keysmith.get_secret('s1', 'previous')" m1
        same "keysmith.get_secret_version('s1', '$v1')" m1; } | tr -d '\n')
[ "$ok" = ttt ]; ks_check $? "put_secret_value of 50 MB: current, previous and get_secret_version read back byte for byte ($ok)"

# a sql-strategy secret whose current value is 1 MB, rotated by the worker
q <<'SQL' >/dev/null
CREATE ROLE big_owner LOGIN IN ROLE keysmith_user;
GRANT SELECT ON src TO big_owner;
CREATE SCHEMA app AUTHORIZATION big_owner;
SET ROLE big_owner;
CREATE FUNCTION app.rotate(step text, secret_name text, token uuid, pending text) RETURNS void
LANGUAGE sql AS $$ SELECT $$;
SELECT keysmith.create_secret('sq1', 'big', 'sql', '{"function": "app.rotate"}', v) FROM src WHERE n = 'm1';
SQL
tok=$(q -c "SET ROLE big_owner" -c "SELECT keysmith.rotate_secret('sq1')")
st=missing
[ -n "$tok" ] && st=$(ks_wait_rotation "$tok")
ok=$(q -c "SET ROLE big_owner" -c "SELECT length(keysmith.get_secret('sq1')) = 32" | tr -d '\n')$(
     q -c "SET ROLE big_owner" -c "SELECT length(r) = len AND md5(r) = h FROM src, keysmith.get_secret('sq1', 'previous') r WHERE n = 'm1'")
[ "$st" = finished ] && [ "$ok" = tt ]
ks_check $? "a rotation of a secret whose value is 1 MB finishes, and previous is that value byte for byte ($st, $ok)"

out=$(qv -c "SELECT keysmith.rotate_secret('s50')")
ks_sqlstate 22023 'secret "s50" has strategy none and is not rotated by keysmith' "$out"
ks_check $? "a strategy none secret of 50 MB is not rotated: 22023"

# a rotation row for a none secret can only be written by hand (the table's
# owner): the worker fails its attempt with the same 22023 text, where a
# step table without set or test once made it call a NULL step and crash
q -c "INSERT INTO keysmith.rotation (token, secret_name, requested_by)
      VALUES ('00000000-0000-4000-8000-0000000000aa', 's1', 'postgres')" >/dev/null
ks_wait_for "SELECT last_error LIKE '%has strategy none and is not rotated by keysmith%'
               FROM keysmith.rotation WHERE token = '00000000-0000-4000-8000-0000000000aa'" 300
ks_check $? "a hand-written rotation of a none secret fails its attempt with the 22023 text, not a crash ($(
    q -c "SELECT state || ', ' || attempts || ': ' || coalesce(last_error, '') FROM keysmith.rotation
          WHERE token = '00000000-0000-4000-8000-0000000000aa'"))"
q -c "DELETE FROM keysmith.rotation WHERE token = '00000000-0000-4000-8000-0000000000aa'" >/dev/null

q -c "CREATE ROLE big_app LOGIN" -c "CREATE ROLE big_app2 LOGIN" -c "SELECT keysmith.create_secret('role1', 'big', 'postgres_role', '{\"role\": \"big_app\"}')" >/dev/null
out=$(qv -c "SELECT keysmith.create_secret('role2', 'big', 'postgres_role', '{\"role\": \"big_app2\"}',
                  json_build_object('username', 'big_app2', 'password', v)::text) FROM src WHERE n = 'm1'")$'\n'$(
      qv -c "SELECT keysmith.put_secret_value('role1', json_build_object('username', 'big_app', 'password', v)::text)
             FROM src WHERE n = 'm1'")
n=$(grep -c "ERROR:  22023: the credential's password must be a string of 1 to 1024 bytes without NUL" <<<"$out")
[ "$n" = 2 ]; ks_check $? "a credential with a 1 MB password: 22023 from create_secret and put_secret_value ($n)"

# the largest plaintext is 0x3FFFFFFF - 38 - 64 = 1073741721 bytes; a text
# value can be up to 1073741819 bytes.  One value of 1073741800 bytes
# (repeat of a 5 MB string: repeat copies its argument once a round) takes
# over a second to make, so only create_secret is given one; encrypt_value,
# put_secret_value and the worker check the size in the same function
# (KsEncryptBytes).
out=$(qv -c "SELECT keysmith.create_secret('huge', 'big', 'none', '{}', repeat(repeat('x', 5368709), 200))")
ks_sqlstate 54000 'value of 1073741800 bytes is too large to encrypt' "$out"
ks_check $? "a value over the largest plaintext: create_secret refuses it with 54000"

# the memory a 50 MB get_secret costs: the backend's peak resident size
hwm=$(psql -X -q -t -A -d postgres <<'SQL' 2>/dev/null | tr '\n' ' '

SELECT pg_backend_pid() AS pid \gset
\setenv KS_PID :pid
\! grep VmHWM /proc/$KS_PID/status | tr -s ' \t' ' '
SELECT length(keysmith.get_secret('s50'));
\! grep VmHWM /proc/$KS_PID/status | tr -s ' \t' ' '
SQL
)
echo "# a backend's peak memory before and after get_secret of 50 MB: $hwm"

cp1=$(checkpointer)
n=$(grep -c 'terminated by signal\|exited with exit code\|was terminated' "$dir/server.log")
[ -n "$cp0" ] && [ "$cp0" = "$cp1" ] && [ "$n" = 0 ]
ks_check $? "no server process crashed (checkpointer $cp0 then $cp1, $n crash lines in the log)"

ks_cluster_stop "$dir"
