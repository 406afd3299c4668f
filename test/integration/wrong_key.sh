#!/usr/bin/env bash
# test/integration/wrong_key.sh
#
# Issue 23: wrong key material never leads to writes.  A DBA moves a
# database (pg_dumpall --globals-only + pg_dump) into a fresh cluster whose
# master key file has the same version number as the source's but another
# key: the common mistake of a file copied from another environment, a
# stale secret mount, an old backup.  Each mistake is performed first:
#  - reads fail with KS008 and a hint that says the key differs;
#  - every write is refused with KS019 and creates no DEK version:
#    encrypt_value (which would roll to a new version on this new server
#    history), put_secret_value, create_key, rotate_dek, and a
#    credential rotation (at its create step, before any password is set);
#  - the server log has one WARNING for it; a keysmith_user's client sees
#    no detail naming keys;
#  - verify_keys() names every unreadable version;
#  - with the right file back: full service and nothing lost (every value,
#    the secret, the credential; the rotation then finishes);
#  - the first record after an update from 0.10 (no check value yet) under
#    a wrong file is refused too, and one under the right file is accepted;
#  - a legitimate new master key version (add_local_master_key) is vouched
#    for by the recorded one; a file holding only another version number
#    is refused;
#  - a wrapped DEK altered in the catalog under the right key gets the
#    other hint: the key matches, the data key was altered.
set -uo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
. "$ROOT/test/lib.sh"
ks_plan 23

A=$KS_WORK/extra-wk-from
B=$KS_WORK/extra-wk-to
cleanup() {
    ks_cluster_stop "$A" immediate >/dev/null 2>&1
    ks_cluster_stop "$B" immediate >/dev/null 2>&1
}
rm -rf "$A" "$B"
ks_cluster_init "$A"
ks_cluster_start "$A"
. "$A/env"
q >/dev/null <<'SQL'
CREATE EXTENSION keysmith;
SELECT keysmith.create_key('wk');
CREATE TABLE public.wv AS
  SELECT i AS id, keysmith.encrypt_value('wk', 'v' || i, i::text) AS c FROM generate_series(1, 20) i;
SELECT keysmith.create_secret('w/static', 'wk', 'none', '{}', 'static-v1');
CREATE ROLE w_app LOGIN;
SELECT keysmith.create_secret('w/app', 'wk', 'postgres_role', '{"role": "w_app"}');
CREATE ROLE w_user LOGIN PASSWORD 'w-user-pw' IN ROLE keysmith_user;
SELECT keysmith.grant_key('wk', 'w_user', 'encrypt');
SELECT keysmith.grant_key('wk', 'w_user', 'decrypt');
SQL
ck=$(q -c "SELECT count(*) FROM keysmith.kek_check WHERE provider = 'local' AND kek_version = '1'")
[ "$ck" = 1 ]
ks_check $? "the source: a key, 20 values, two secrets; the check value of master key version 1 is recorded ($ck)"
app_cred=$(q -c "SELECT keysmith.get_secret('w/app')")
ks_as_pg "$PG_BIN/pg_dumpall" -h "$A" -p "$PGPORT" -U postgres --globals-only >"$KS_WORK/wk-globals.sql" 2>"$KS_WORK/wk-dump.err" &&
    ks_as_pg "$PG_BIN/pg_dump" -h "$A" -p "$PGPORT" -U postgres -Fc -d postgres >"$KS_WORK/wk.dump" 2>>"$KS_WORK/wk-dump.err"
rc=$?
cp -p "$A/data/keysmith_master.key" "$KS_WORK/wk-right.key"
ks_cluster_stop "$A"

# the fresh cluster made its own master key file, version 1, another key
ks_cluster_init "$B"
echo "keysmith.rotation_naptime = '200ms'" >>"$B/data/postgresql.conf"
ks_cluster_start "$B"
. "$B/env"
psql -X -q -d postgres -f "$KS_WORK/wk-globals.sql" >"$KS_WORK/wk-restore.log" 2>&1
ks_as_pg "$PG_BIN/pg_restore" -h "$B" -p "$PGPORT" -U postgres -d postgres "$KS_WORK/wk.dump" >>"$KS_WORK/wk-restore.log" 2>&1
rc=$((rc + $?))
! cmp -s "$B/data/keysmith_master.key" "$KS_WORK/wk-right.key" && grep -q '^1:' "$B/data/keysmith_master.key"
ks_check_out $((rc + $?)) "$(grep -i error "$KS_WORK/wk-restore.log" | grep -v 'role "postgres" already exists')" \
    "restored into a fresh cluster whose master key file has version 1 too, with another key"

versions() { q -c "SELECT count(*) FROM keysmith.key_version"; }
v0=$(versions)
out=$(qv -c "SELECT keysmith.decrypt_value(c, id::text) FROM public.wv WHERE id = 1")
ks_sqlstate KS008 '*does not authenticate under master key version 1*' "$out" &&
    [[ $out == *"HINT:  KEK version 1 at hand is not the one this database recorded"* ]]
ks_check_out $? "$out" "a read fails with KS008, and its hint says the key material differs (not an altered value)"

out=$(qv -c "SELECT keysmith.encrypt_value('wk', 'written under the wrong key')")
ks_sqlstate KS019 'key "wk" gets no new version: its versions do not open with the key material*' "$out" &&
    [ "$(versions)" = "$v0" ]
ks_check_out $? "$out" "attack: encrypt_value (a rollover onto this new server history) is refused with KS019; no DEK version made"

out=$(qv -c "SELECT keysmith.put_secret_value('w/static', 'static-v2')" \
         -c "SELECT keysmith.create_key('wk2')" \
         -c "SELECT keysmith.rotate_dek('wk')")
n19=$(grep -c 'ERROR:  KS019' <<<"$out")
nk=$(q -c "SELECT count(*) FROM keysmith.key WHERE name = 'wk2'")
sv=$(q -c "SELECT count(*) FROM keysmith.secret_version WHERE secret_name = 'w/static'")
[ "$n19" -ge 3 ] && [ "$nk" = 0 ] && [ "$sv" = 1 ] && [ "$(versions)" = "$v0" ] &&
    ks_sqlstate KS019 '*' "$(qv -c "SELECT keysmith.create_key('wk2')")" &&
    ks_sqlstate KS019 'key "wk" gets no new version*' "$(qv -c "SELECT keysmith.rotate_dek('wk')")"
ks_check_out $? "$out" "attack: put_secret_value, create_key and rotate_dek are each refused with KS019; no key, version or secret version written"

# another provider name for the same file (a superuser made it; an admin
# may use it): the first wrap under it is vouched for by what "local"
# recorded for that file, and so refused
q -c "SELECT keysmith.create_kms_provider('p2', 'local', '{}')" >/dev/null
out=$(qv -c "SELECT keysmith.create_key('evil', 'p2')")
ck=$(q -c "SELECT count(*) FROM keysmith.kek_check WHERE provider = 'p2'")
ks_sqlstate KS019 'the key material of KMS provider "p2" is not the one this database was made with*' "$out" &&
    [ "$ck" = 0 ] && [ "$(q -c "SELECT count(*) FROM keysmith.key WHERE name = 'evil'")" = 0 ]
ks_check_out $? "$out; p2 records $ck" "attack: a second provider that reads the same file records nothing of its own: its first wrap is refused too"

w=$(grep -c "WARNING:  keysmith refuses to wrap data keys under KMS provider \"local\"" "$B/server.log")
[ "$w" -ge 1 ]
ks_check_out $? "$w warnings" "the server log has the WARNING that names the provider (once per backend)"

out=$(PGPASSWORD=w-user-pw psql -X -q -t -A -v VERBOSITY=verbose -h 127.0.0.1 -p "$PGPORT" -U w_user -d postgres \
        -c "SELECT keysmith.encrypt_value('wk', 'x')" 2>&1)
others=$(grep -o 'key "[^"]*"' <<<"$out" | grep -v '^key "wk"$')
ks_sqlstate KS019 '*' "$out" && [ -z "$others" ] && [[ $out != *kek_check* ]]
ks_check_out $? "$out" "a keysmith_user gets KS019 naming no key but the one it used (details naming others are in the server log only)"

tok=$(q -c "SELECT keysmith.rotate_secret('w/app')")
err=
for _ in $(seq 1 100); do
    err=$(q -c "SELECT coalesce(last_error, '') FROM keysmith.rotation WHERE token = '$tok'")
    [ -n "$err" ] && break
    sleep 0.1
done
st=$(q -c "SELECT state FROM keysmith.rotation WHERE token = '$tok'")
lg=$(login w_app "$(field "$app_cred" password)" 'SELECT current_user')
[ "$st" = create ] && [[ $err == *"gets no new version: its versions do not open"* ]] &&
    [ "$lg" = w_app ] && [ "$(versions)" = "$v0" ]
ks_check_out $? "state $st; error $err; login $lg" \
    "attack: a credential rotation fails at its create step, before any password is set; the restored credential still logs in"

out=$(q -F '|' -c "SELECT key_name, version, readable, sqlstate FROM keysmith.verify_keys() ORDER BY 1, 2")
[ "$out" = "wk|1|f|KS008" ]
ks_check_out $? "$out" "verify_keys() names the unreadable key version and its SQLSTATE"

# the right file back
ks_as_pg sh -c "cp '$KS_WORK/wk-right.key' '$B/data/keysmith_master.key.new' && chmod 0600 '$B/data/keysmith_master.key.new' &&
                mv '$B/data/keysmith_master.key.new' '$B/data/keysmith_master.key'"
out=$(q -F '|' -c "SELECT key_name, version, readable FROM keysmith.verify_keys()")
n=$(q -c "SELECT count(*) FROM public.wv WHERE keysmith.decrypt_value(c, id::text) = 'v' || id")
s=$(q -c "SELECT keysmith.get_secret('w/static')")
[ "$out" = "wk|1|t" ] && [ "$n" = 20 ] && [ "$s" = static-v1 ]
ks_check_out $? "verify $out; decrypted $n; secret $s" "the right file back: verify_keys() says readable, all 20 values and the secret read back (nothing lost)"

q -c "SELECT keysmith.put_secret_value('w/static', 'static-v2')" >/dev/null
v=$(q -c "SELECT key_version FROM keysmith.ciphertext_info(keysmith.encrypt_value('wk', 'now'))" -c "SELECT keysmith.get_secret('w/static')" | tr '\n' ' ')
st=$(ks_wait_rotation "$tok")
cred=$(q -c "SELECT keysmith.get_secret('w/app')")
lg=$(login w_app "$(field "$cred" password)" 'SELECT current_user')
[ "$v" = "2 static-v2 " ] && [ "$st" = finished ] && [ "$lg" = w_app ] && [ "$cred" != "$app_cred" ]
ks_check_out $? "encrypt/put: $v; rotation $st; login $lg" "and writes work again: encryption rolls to version 2, a secret is written, the waiting rotation finishes and its credential logs in"

# the first record after an update from 0.10: no check value yet
q -c "DELETE FROM keysmith.kek_check" >/dev/null
ks_new_master_key "$B/data/keysmith_master.key.new"
ks_as_pg mv "$B/data/keysmith_master.key.new" "$B/data/keysmith_master.key"
out=$(qv -c "SELECT keysmith.create_key('wk3')")
nk=$(q -c "SELECT count(*) FROM keysmith.key WHERE name = 'wk3'")
ck=$(q -c "SELECT count(*) FROM keysmith.kek_check")
ks_sqlstate KS019 '*' "$out" && [ "$nk" = 0 ] && [ "$ck" = 0 ]
ks_check_out $? "$out; keys $nk; checks $ck" "attack: with no check value recorded (a database updated from 0.10), a wrong file is refused all the same: the data keys do not open"

ks_as_pg sh -c "cp '$KS_WORK/wk-right.key' '$B/data/keysmith_master.key.new' && mv '$B/data/keysmith_master.key.new' '$B/data/keysmith_master.key'"
q -c "SELECT keysmith.create_key('wk3')" >/dev/null
ck=$(q -c "SELECT string_agg(kek_version, ',') FROM keysmith.kek_check")
[ "$ck" = 1 ]
ks_check_out $? "$ck" "with the right file the first record is made (from the data keys that open)"

# a legitimate new master key version, then a file with only another version
nv=$(q -c "SELECT keysmith.add_local_master_key()")
q -c "SELECT keysmith.rotate_kek('wk')" >/dev/null
ck=$(q -c "SELECT string_agg(kek_version, ',' ORDER BY kek_version) FROM keysmith.kek_check")
[ "$nv" = 2 ] && [ "$ck" = 1,2 ]
ks_check_out $? "new version $nv; recorded $ck" "a new master key version (add_local_master_key) is vouched for by version 1 and recorded at its first wrap"
cp -p "$B/data/keysmith_master.key" "$KS_WORK/wk-right2.key"
hex=$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')
ks_as_pg sh -c "umask 077; printf '3:%s\n' '$hex' > '$B/data/keysmith_master.key.new' && mv '$B/data/keysmith_master.key.new' '$B/data/keysmith_master.key'"
out=$(qv -c "SELECT keysmith.create_key('wk4')")
ks_sqlstate KS019 '*' "$out" && [ "$(q -c "SELECT count(*) FROM keysmith.key WHERE name = 'wk4'")" = 0 ]
ks_check_out $? "$out" "attack: a file holding only another version number (3) is refused: no recorded version vouches, no data key opens"

# an altered wrapped DEK under the right key
ks_as_pg sh -c "cp '$KS_WORK/wk-right2.key' '$B/data/keysmith_master.key.new' && mv '$B/data/keysmith_master.key.new' '$B/data/keysmith_master.key'"
q -c "UPDATE keysmith.key_version v SET wrapped_dek = set_byte(wrapped_dek, 20, get_byte(wrapped_dek, 20) # 1)
        FROM keysmith.key k WHERE k.key_id = v.key_id AND k.name = 'wk3'" >/dev/null
out=$(qv -c "SELECT keysmith.encrypt_value('wk3', 'x')")
ks_sqlstate KS008 '*' "$out" && [[ $out == *"is the one this database recorded, so the wrapped data key itself was altered"* ]]
ks_check_out $? "$out" "a wrapped DEK altered in the catalog: KS008 whose hint says the key matches and the data key was altered"

# an open transaction that recorded a new master key version first holds
# up no other wrap: the record is left to a later wrap, the vouch stands
q -c "SELECT keysmith.add_local_master_key()" >/dev/null
psql -X -q -d postgres -c "BEGIN" -c "SELECT keysmith.rotate_dek('wk')" -c "SELECT pg_sleep(4)" -c "COMMIT" \
    >"$KS_WORK/wk-hold.out" 2>&1 &
hold=$!
sleep 1
out=$(qv -c "SELECT keysmith.create_key('wk6')" -c "SELECT keysmith.encrypt_value('wk6', 'x') IS NOT NULL")
wait $hold
held=$(cat "$KS_WORK/wk-hold.out")
ck=$(q -c "SELECT count(*) FROM keysmith.kek_check WHERE kek_version = '3'")
[ "$(tail -1 <<<"$out")" = t ] && [[ $out != *ERROR* ]] && [[ $held != *ERROR* ]] && [ "$ck" = 1 ]
ks_check_out $? "$out; holder: $held; records of version 3: $ck" \
    "attack: a transaction holding the first record of a new master key version open does not stop another session's wraps (no lock timeout)"

# a database an earlier mistake left split (0.10 had no guard): a newer
# DEK version under other material.  With the right file, the first record
# goes by the oldest data keys, and writes go on.  (wk3's DEK, altered
# above, is mended first: it is the oldest under master key version 1.)
q -c "UPDATE keysmith.key_version v SET wrapped_dek = set_byte(wrapped_dek, 20, get_byte(wrapped_dek, 20) # 1)
        FROM keysmith.key k WHERE k.key_id = v.key_id AND k.name = 'wk3'" >/dev/null
q -c "SELECT keysmith.create_key('sp')" -c "SELECT keysmith.rotate_dek('sp')" -c "SELECT keysmith.rotate_dek('sp')" \
  -c "SELECT keysmith.rotate_dek('sp')" -c "SELECT keysmith.rotate_dek('sp')" >/dev/null
q -c "UPDATE keysmith.key_version v SET wrapped_dek = set_byte(wrapped_dek, 30, get_byte(wrapped_dek, 30) # 1)
        FROM keysmith.key k WHERE k.key_id = v.key_id AND k.name = 'sp' AND v.version = 5" \
  -c "DELETE FROM keysmith.kek_check" >/dev/null
out=$(qv -c "SELECT keysmith.create_key('after-split')" -c "SELECT keysmith.rotate_dek('sp')")
ck=$(q -c "SELECT count(*) FROM keysmith.kek_check")
[ "$(tail -1 <<<"$out")" = 6 ] && [[ $out != *ERROR* ]] && [ "$ck" -ge 1 ]
ks_check_out $? "$out; records $ck" "a split database (its newest version under other material) with the right file: the oldest data keys vouch, writes go on"

# second review, finding 1: two sessions that see different files for the
# first record of a fresh database.  The second must not skip the first's
# uncommitted record and go on: it waits for it (bounded), and is refused
ks_new_master_key "$B/data/wk-other2.key"
q -c "CREATE DATABASE wk_fresh" >/dev/null
q -d wk_fresh -c "CREATE EXTENSION keysmith" >/dev/null
psql -X -q -d wk_fresh -c "BEGIN" -c "SELECT keysmith.create_key('fa')" -c "SELECT pg_sleep(4)" -c "COMMIT" \
    >"$KS_WORK/wk-first.out" 2>&1 &
hold=$!
sleep 1
out=$(qv -d wk_fresh -c "SET keysmith.local_master_key_file = 'wk-other2.key'" -c "SELECT keysmith.create_key('fb')")
wait $hold
nk=$(q -d wk_fresh -c "SELECT string_agg(name, ',' ORDER BY name) FROM keysmith.key")
{ ks_sqlstate 55P03 'another transaction is recording the first check value of KMS provider "local"' "$out" ||
  ks_sqlstate KS019 '*' "$out"; } && [ "$nk" = fa ]
ks_check_out $? "$out; keys: $nk" "attack: the first record of a fresh database, a second session with another file: refused (it waits for the first's record), only the first's key exists"

# finding 3: a provider that had its own file, pointed at the main file:
# its old records go with the change, and the right file keeps working
ks_new_master_key "$B/data/wk-tenant.key"
q -c "SELECT keysmith.create_kms_provider('tenant_a', 'local', '{\"master_key_file\": \"wk-tenant.key\"}')" \
  -c "SELECT keysmith.create_key('ta1', 'tenant_a')" -c "SELECT keysmith.migrate_key('ta1', 'local')" \
  -c "SELECT keysmith.alter_kms_provider('tenant_a', '{\"master_key_file\": \"keysmith_master.key\"}')" >/dev/null
tr=$(q -c "SELECT count(*) FROM keysmith.kek_check WHERE provider = 'tenant_a'")
out=$(qv -c "SELECT keysmith.add_local_master_key()" -c "SELECT keysmith.create_key('main2')" -c "SELECT keysmith.rotate_kek('wk')")
[ "$tr" = 0 ] && [[ $out != *ERROR* ]] && [ "$(q -c "SELECT count(*) FROM keysmith.key WHERE name = 'main2'")" = 1 ]
ks_check_out $? "tenant_a records after the change: $tr; $out" "a provider pointed from its own file at the main one drops its records: the right file, with a new version, goes on (no KS019)"

# finding 4: a catalog not yet updated (0.10 under this library) has no
# kek_check table: the data keys under the provider decide instead
ks_new_master_key "$B/data/wk-old.key"
q -c "CREATE DATABASE wk_old" >/dev/null
q -d wk_old -c "CREATE EXTENSION keysmith VERSION '0.10'" \
  -c "SELECT keysmith.create_kms_provider('old', 'local', '{\"master_key_file\": \"wk-old.key\"}')" \
  -c "SELECT keysmith.create_key('o1', 'old')" >/dev/null
ks_new_master_key "$B/data/wk-old.key.new"
ks_as_pg mv "$B/data/wk-old.key.new" "$B/data/wk-old.key"
out=$(qv -d wk_old -c "SELECT keysmith.create_key('o2', 'old')")
ks_sqlstate KS019 'KMS provider "old" holds other key material*' "$out" &&
    [ "$(q -d wk_old -c "SELECT count(*) FROM keysmith.key WHERE name = 'o2'")" = 0 ]
ks_check_out $? "$out" "attack: a 0.10 catalog under this library with a wrong file: create_key refused (the oldest data key decides), no key made"

ks_cluster_stop "$B"
ks_check $? "cluster stopped"
