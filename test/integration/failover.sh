#!/usr/bin/env bash
# test/integration/failover.sh
#
# Plain streaming replication, on loopback: a primary, a standby made by
# pg_basebackup, then the primary killed with SIGKILL and the standby
# promoted.
#  - On the standby: decrypt_value works; every keysmith function that
#    writes (encrypt_value included: encryption counts are the primary's)
#    is refused with 25006 and a hint; the reaper and the rotation worker
#    idle.
#  - Across the failover: a lease that expires during it is revoked by the
#    new primary (the lag from expiry to revocation is printed); the first
#    encryption after promotion rolls the key to a new DEK version, since
#    the new primary cannot know the old version's count; no value is lost.
#  - A rotation paused after its set step (keysmith.rotation_pause_at, on
#    the old primary only) finishes exactly once on the new primary, and
#    its current credential logs in.
#  - A key schedule (every 2 s) keeps its period: the new primary serves
#    the next periods on the same grid, none twice, one DEK rotation each.
#  - Members of a key family roll over too: the first encryption under a
#    member on the new primary makes it a new version, sealed by a new
#    family version (the family's count is not known there either), and
#    every member's old values still decrypt.
#  - A restore of a base backup with recovery (a new timeline) rolls over
#    too, so the copy and the original never encrypt under one DEK version.
set -uo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
. "$ROOT/test/lib.sh"
ks_plan 18

P=$KS_WORK/extra-failover-primary
S=$KS_WORK/extra-failover-standby
R=$KS_WORK/extra-failover-restore
rm -rf "$P" "$S" "$R"
ks_cluster_init "$P"
echo "keysmith.reaper_naptime = '200ms'" >>"$P/data/postgresql.conf"
echo "keysmith.rotation_naptime = '200ms'" >>"$P/data/postgresql.conf"
echo "host replication postgres 127.0.0.1/32 trust" >>"$P/data/pg_hba.conf"
ks_cluster_start "$P"
. "$P/env"
PP=$PGPORT
qp() { q -h "$P" -p "$PP" -d postgres "$@"; }
q -h "$P" -p "$PP" -d postgres >/dev/null <<'SQL'
CREATE EXTENSION keysmith;
SELECT keysmith.create_key('fk');
CREATE TABLE ft AS SELECT i AS id, keysmith.encrypt_value('fk', 'v' || i, i::text) AS c FROM generate_series(1, 100) i;
CREATE ROLE f_rw NOLOGIN;
SELECT keysmith.create_role_template('f', ARRAY['f_rw'], '1 minute', '1 hour');
SELECT keysmith.create_key('fsk');
SELECT keysmith.schedule_key_rotation('fsk', '2 seconds', false);
SELECT keysmith.create_key('frk');
CREATE ROLE fapp LOGIN;
SELECT keysmith.create_secret('db/fapp', 'frk', 'postgres_role', '{"role": "fapp"}');
SELECT keysmith.create_key_family('ffam');
SELECT keysmith.create_keys('ffam', ARRAY['fm1', 'fm2']);
CREATE TABLE fmt AS SELECT i AS id, keysmith.encrypt_value('fm' || (i % 2 + 1), 'm' || i) AS c FROM generate_series(1, 20) i;
SQL
ks_check $? "a primary with a key, 100 values and a lease template"

base_backup() { # DIR [ARGS]: a base backup of the primary into DIR
    local d=$1; shift
    mkdir -p "$d"; chown "$PG_OSUSER": "$d"; chmod 700 "$d"
    ks_as_pg "$PG_BIN/pg_basebackup" -h 127.0.0.1 -p "$PP" -U postgres -D "$d/data" -X stream -c fast "$@" >"$d/basebackup.log" 2>&1
    {
        echo "port = $(ks_free_port)"
        echo "unix_socket_directories = '$d'"
    } >>"$d/data/postgresql.conf"
    sed -n 's/^port = //p' "$d/data/postgresql.conf" | tail -1
}
SP=$(base_backup "$S" -R)
ks_cluster_start "$S"
qs() { q -h "$S" -p "$SP" -d postgres "$@"; }
for _ in $(seq 1 100); do [ "$(qs -c "SELECT pg_is_in_recovery()" 2>/dev/null)" = t ] && break; sleep 0.1; done
n=$(qs -c "SELECT count(*) FROM ft WHERE keysmith.decrypt_value(c, id::text) = 'v' || id")
[ "$n" = 100 ]
ks_check $? "a streaming standby made by pg_basebackup decrypts all 100 values"

# every writing function on the standby: 25006 and a hint
calls=(
    "SELECT keysmith.encrypt_value('fk', 'x')"
    "SELECT keysmith.rewrap_value(c) FROM ft WHERE id = 1"
    "SELECT keysmith.create_key('fk2')"
    "SELECT keysmith.rotate_dek('fk')"
    "SELECT keysmith.rotate_kek('fk')"
    "SELECT keysmith.retire_key_version('fk', 1)"
    "SELECT keysmith.destroy_key('fk')"
    "SELECT keysmith.grant_key('fk', 'f_rw', 'decrypt')"
    "SELECT keysmith.add_local_master_key()"
    "SELECT keysmith.migrate_key('fk', 'local')"
    "SELECT keysmith.create_kms_provider('p2', 'local')"
    "SELECT keysmith.drop_kms_provider('p2')"
    "SELECT keysmith.create_role_template('f2', ARRAY['f_rw'], '1 minute', '1 hour')"
    "SELECT * FROM keysmith.issue_role('f', '1 minute')"
    "SELECT keysmith.renew_lease(gen_random_uuid(), '1 minute')"
    "SELECT keysmith.revoke_lease(gen_random_uuid())"
    "SELECT keysmith.drop_role_template('f')"
    "SELECT keysmith.create_secret('s', 'fk', 'none', '{}', 'v')"
    "SELECT keysmith.schedule_key_rotation('fk', '1 day')"
)
bad=""
for c in "${calls[@]}"; do
    out=$(psql -X -q -t -A -v VERBOSITY=verbose -h "$S" -p "$SP" -d postgres -c "$c" 2>&1)
    if ! ks_sqlstate 25006 'cannot * on a standby*' "$out" || [[ $out != *HINT:*primary* ]]; then
        bad="$bad | $c: $(echo "$out" | head -1)"
    fi
done
[ -z "$bad" ]
ks_check_out $? "$bad" "all ${#calls[@]} writing functions, encrypt_value included, are refused on the standby with 25006 and a hint to use the primary"
grep -q "keysmith lease reaper is idle while the server is in recovery" "$S/server.log" &&
    grep -q "keysmith rotation worker is idle while the server is in recovery" "$S/server.log"
ks_check $? "the standby's reaper and rotation worker idle in recovery"

# the schedule has served two periods, and the standby has seen them
sched_runs() { "$@" -c "SELECT count(*) || ' ' || coalesce(max(period), -1) FROM keysmith.schedule_run WHERE target = 'fsk'"; }
for _ in $(seq 1 100); do
    read -r n_before p_before <<<"$(sched_runs qp)"
    [ "$n_before" -ge 2 ] && [ "$(sched_runs qs)" = "$n_before $p_before" ] && break
    sleep 0.1
done
# a rotation paused after its set step, on the old primary only (ALTER
# SYSTEM is not replicated)
old_cred=$(qp -c "SELECT keysmith.get_secret('db/fapp')")
tok=$(PGHOST=$P PGPORT=$PP ks_rotate_paused db/fapp set)
paused=$?
for _ in $(seq 1 100); do [ "$(qs -c "SELECT count(*) FROM keysmith.rotation WHERE token = '$tok'" 2>/dev/null)" = 1 ] && break; sleep 0.1; done
# a lease that expires during the failover
lease=$(qp -c "SELECT lease_id FROM keysmith.issue_role('f', '3 seconds')")
user=$(qp -c "SELECT username FROM keysmith.leases WHERE lease_id = '$lease'")
v_before=$(qp -c "SELECT current_version FROM keysmith.keys WHERE name = 'fk'")
for _ in $(seq 1 100); do [ "$(qs -c "SELECT count(*) FROM keysmith.lease WHERE lease_id = '$lease'" 2>/dev/null)" = 1 ] && break; sleep 0.1; done
pm=$(head -1 "$P/data/postmaster.pid")
kill -KILL "$pm"
for _ in $(seq 1 100); do ks_pid_alive "$pm" || break; sleep 0.1; done
t_kill=$(date +%s.%N)
qs -c "SELECT pg_promote(true, 30)" >/dev/null
for _ in $(seq 1 100); do [ "$(qs -c "SELECT pg_is_in_recovery()" 2>/dev/null)" = f ] && break; sleep 0.1; done
[ "$(qs -c "SELECT pg_is_in_recovery()")" = f ]
ks_check $? "the primary is killed with SIGKILL; the standby is promoted"
t_up=$(date +%s.%N)

for _ in $(seq 1 150); do
    st=$(qs -c "SELECT state FROM keysmith.leases WHERE lease_id = '$lease'" 2>/dev/null)
    [ "$st" = revoked ] && break
    sleep 0.2
done
lag=$(qs -c "SELECT round(extract(epoch FROM revoked_at - expires)::numeric, 2) FROM keysmith.leases WHERE lease_id = '$lease'")
gone=$(qs -c "SELECT count(*) FROM pg_roles WHERE rolname = '$user'")
[ "$st" = revoked ] && [ "$gone" = 0 ]
ks_check $? "the lease that expired during the failover is revoked by the new primary, its role dropped (revoked ${lag} s after expiry)"
echo "# failover (SIGKILL to promoted) took $(awk -v a="$t_kill" -v b="$t_up" 'BEGIN {printf "%.2f", b - a}') s; the lease was revoked ${lag} s after it expired"

st=$(PGHOST=$S PGPORT=$SP ks_wait_rotation "$tok")
n=$(qs -c "SELECT count(*) FROM keysmith.rotation WHERE secret_name = 'db/fapp'")
ev=$(qs -c "SELECT string_agg(event, ',' ORDER BY event_id) FROM keysmith.rotation_event WHERE token = '$tok'")
[ $paused = 0 ] && [ "$st" = finished ] && [ "$n" = 1 ]
ks_check_out $? "paused $paused; $st $n $ev" "the rotation paused after set at the failover finishes exactly once on the new primary ($ev)"
cur=$(qs -c "SELECT keysmith.get_secret('db/fapp')")
pw=$(python3 -c 'import json, sys; print(json.loads(sys.argv[1])["password"])' "$cur")
PGPASSWORD=$pw psql -X -q -t -A -h 127.0.0.1 -p "$SP" -U fapp -d postgres -c 'SELECT 1' >/dev/null 2>&1 && [ "$cur" != "$old_cred" ]
ks_check $? "and its current credential logs in"

for _ in $(seq 1 200); do
    read -r n_after p_after <<<"$(sched_runs qs)"
    [ "$p_after" -ge $((p_before + 2)) ] && break
    sleep 0.1
done
grid=$(qs -c "SELECT bool_and(r.period_start = s.starting + s.every * r.period)
                     AND count(*) = count(DISTINCT r.period)
                     AND max(s.next_due_at) = max(s.starting + s.every * (s.last_period + 1))
                FROM keysmith.schedule_run r JOIN keysmith.schedule s USING (schedule_id) WHERE r.target = 'fsk'")
[ "$p_after" -ge $((p_before + 2)) ] && [ "$grid" = t ]
ks_check_out $? "periods $p_before -> $p_after, grid $grid" \
    "the key schedule keeps its period across the failover: the new primary serves periods $((p_before + 1))..$p_after on the old grid, none twice"
# one snapshot: a run rotates the DEK and records its period in one
# transaction, and the schedule keeps running meanwhile
read -r vers rot runs <<<"$(qs -F ' ' -c "SELECT (SELECT current_version FROM keysmith.keys WHERE name = 'fsk'),
        count(*) FILTER (WHERE result LIKE 'rotated the DEK to version %'), count(*)
   FROM keysmith.schedule_run WHERE target = 'fsk'")"
[ "$vers" = $((rot + 1)) ] && [ "$rot" = "$runs" ]
ks_check_out $? "version $vers, $rot rotations, $runs runs" "each served period rotated the key once ($runs runs, version $vers)"

c=$(qs -c "SELECT keysmith.encrypt_value('fk', 'after', 'x')")
v_after=$(qs -c "SELECT key_version FROM keysmith.ciphertext_info('$c')")
[ "$v_after" = $((v_before + 1)) ]
ks_check $? "the first encryption after promotion uses a new DEK version ($v_before -> $v_after)"
epochs=$(qs -c "SELECT count(DISTINCT server_epoch) FROM keysmith.key_versions WHERE key_name = 'fk'")
tl=$(qs -c "SELECT timeline_id FROM pg_control_checkpoint()")
ev=$(qs -c "SELECT detail FROM keysmith.key_event WHERE key_name = 'fk' AND event = 'rollover' ORDER BY event_id DESC LIMIT 1")
[ "$epochs" = 2 ] && [[ $ev == "version $v_before was made on another server history; this primary is "*/2 ]]
ks_check_out $? "$epochs $tl $ev" "the new version records the new timeline, and the rollover is audited"
n=$(qs -c "SELECT count(*) FROM keysmith.key_versions WHERE key_name = 'fk'")
c2=$(qs -c "SELECT keysmith.encrypt_value('fk', 'again')")
[ "$(qs -c "SELECT key_version FROM keysmith.ciphertext_info('$c2')")" = "$v_after" ] &&
    [ "$(qs -c "SELECT count(*) FROM keysmith.key_versions WHERE key_name = 'fk'")" = "$n" ]
ks_check $? "and only once: later encryptions stay on it"
n=$(qs -c "SELECT count(*) FROM ft WHERE keysmith.decrypt_value(c, id::text) = 'v' || id")
[ "$n" = 100 ] && [ "$(qs -c "SELECT keysmith.decrypt_value('$c', 'x')")" = after ]
ks_check $? "no value is lost: the 100 old values and the new one decrypt"
# a family's member: a new member version under a new family version
c3=$(qs -c "SELECT keysmith.encrypt_value('fm1', 'after')")
mv=$(qs -c "SELECT key_version FROM keysmith.ciphertext_info('$c3')")
fam=$(qs -c "SELECT string_agg(key_name || ':' || version || ':' || coalesce(wrapped_by::text, '-') || ':' || (server_epoch LIKE '%/2'), ',' ORDER BY key_name, version)
               FROM keysmith.key_versions WHERE key_name IN ('ffam', 'fm1') AND state = 'active'")
n=$(qs -c "SELECT count(*) FROM fmt WHERE keysmith.decrypt_value(c) = 'm' || id")
[ "$mv" = 2 ] && [ "$fam" = "ffam:1:-:false,ffam:2:-:true,fm1:1:1:false,fm1:2:2:true" ] && [ "$n" = 20 ] &&
    [ "$(qs -c "SELECT keysmith.decrypt_value('$c3')")" = after ]
ks_check_out $? "$mv $fam $n" "a family member rolls over on the new primary, sealed by a new family version; all 20 member values decrypt"
r=$(qs -c "SELECT keysmith.rotate_dek('fk')")
[ "$r" = $((v_after + 1)) ]
ks_check $? "the new primary takes key changes (rotate_dek -> $r)"

# a restore with recovery: a new timeline, so its own DEK version
PP=$SP; P=$S
RP=$(base_backup "$R")
touch "$R/data/recovery.signal"
chown "$PG_OSUSER": "$R/data/recovery.signal"
echo "restore_command = 'false'" >>"$R/data/postgresql.conf"
ks_cluster_start "$R"
qr() { q -h "$R" -p "$RP" -d postgres "$@"; }
for _ in $(seq 1 100); do [ "$(qr -c "SELECT pg_is_in_recovery()" 2>/dev/null)" = f ] && break; sleep 0.1; done
vr=$(qr -c "SELECT key_version FROM keysmith.ciphertext_info(keysmith.encrypt_value('fk', 'r'))")
vs=$(qs -c "SELECT key_version FROM keysmith.ciphertext_info(keysmith.encrypt_value('fk', 's'))")
[ "$vr" = $((r + 1)) ] && [ "$vs" = "$r" ]
ks_check $? "a restored base backup (recovery, new timeline) rolls to its own version $vr; the original keeps $vs"
n=$(qr -c "SELECT count(*) FROM ft WHERE keysmith.decrypt_value(c, id::text) = 'v' || id")
[ "$n" = 100 ]
ks_check $? "and decrypts every value"
ks_cluster_stop "$R"; ks_cluster_stop "$S"
