#!/usr/bin/env bash
# test/integration/hostile_search_path.sh
#
# Finding 5 of docs/security.md.  mallory, a login role with CREATE on
# schema public, fills it with shadows of the pg_catalog functions,
# aggregates and operators that SQL bodies use (unnest, array_agg, max,
# format, count, now, =, ||, ...), each with pg_catalog's exact signature.
# Every shadow records who ran it in a tripwire table and, when that is a
# superuser, makes mallory a superuser.  A superuser then runs every keysmith
# function, the reencrypt procedure and every view with
# search_path = public, pg_catalog, the worst case, where an exact-signature
# shadow wins over pg_catalog for any unqualified name.  Nothing may fire.
#
# First the attack on 0.2's reencrypt is reproduced (its body called
# unnest without qualification), so the shadows are known to work.  Last,
# a catalog check: every keysmith function either pins search_path or is
# one of those run here under the hostile path.
set -uo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
. "$ROOT/test/lib.sh"
ks_plan 7
# a cluster of its own whose reaper works in ks_hostile, so leases are
# tested in the same database as the shadows
dir=$KS_WORK/extra-hostile
ks_cluster_init "$dir"
echo "keysmith.database_name = 'ks_hostile'" >>"$dir/data/postgresql.conf"
ks_cluster_start "$dir"
. "$dir/env"
DB=ks_hostile
KS_DB=$DB KS_VERBOSITY=verbose    # of q (test/lib.sh)

psql -X -q -d postgres -c "CREATE DATABASE $DB" -c "CREATE ROLE mallory LOGIN" >/dev/null
q <<'SQL'
GRANT CREATE ON SCHEMA public TO mallory;
CREATE TABLE public.tripwire (shadow text, ran_as name, at timestamptz DEFAULT clock_timestamp());
GRANT INSERT, SELECT ON public.tripwire TO PUBLIC;
-- what every shadow does; runs with the rights of whoever calls it
-- the WARNING reaches the log even when the statement fails and rolls the
-- row back (a shadow returning NULL can make its caller fail)
CREATE FUNCTION public.tripwire_fire(what text) RETURNS void LANGUAGE plpgsql AS $f$
BEGIN
    RAISE WARNING 'hostile shadow % fired as %', what, current_user;
    INSERT INTO public.tripwire (shadow, ran_as) VALUES (what, current_user);
    IF (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname OPERATOR(pg_catalog.=) current_user) THEN
        ALTER ROLE mallory SUPERUSER;
    END IF;
END $f$;
ALTER FUNCTION public.tripwire_fire(text) OWNER TO mallory;
SQL
ks_check $? "setup: mallory owns a tripwire in public"

# The shadows, made by mallory: each pg_catalog function of these names that
# plpgsql can imitate, same arguments, same result type.
psql -X -q -t -A -d $DB -U mallory <<'SQL' >"$KS_WORK/hostile-shadows.log" 2>&1
DO $shadows$
DECLARE
    r record;
    made int := 0;
    body text;
BEGIN
    FOR r IN
        SELECT p.proname, pg_catalog.pg_get_function_arguments(p.oid) AS args,
               pg_catalog.pg_get_function_result(p.oid) AS res, p.proretset
          FROM pg_catalog.pg_proc p
         WHERE p.pronamespace OPERATOR(pg_catalog.=) 'pg_catalog'::pg_catalog.regnamespace
           AND p.prokind OPERATOR(pg_catalog.=) 'f'
           AND p.proname OPERATOR(pg_catalog.=) ANY (ARRAY[
               'unnest', 'format', 'now', 'clock_timestamp', 'coalesce', 'lower', 'upper', 'length',
               'substr', 'encode', 'decode', 'date_part', 'round', 'make_interval', 'power', 'greatest', 'least',
               'jsonb_typeof', 'jsonb_each', 'jsonb_array_elements', 'pg_has_role', 'has_table_privilege',
               'pg_try_advisory_lock', 'pg_advisory_unlock', 'pg_sleep_for', 'pg_terminate_backend',
               'pg_backend_pid', 'to_regclass', 'quote_ident', 'string_agg', 'nextval', 'gen_random_uuid',
               'pg_get_userbyid', 'current_setting', 'set_config', 'pg_stat_get_activity', 'textcat',
               'regclassout', 'tideq', 'texteq', 'nameeq', 'oideq', 'int4eq', 'uuid_eq'])
    LOOP
        body := CASE WHEN r.proretset THEN 'RETURN;' ELSE 'RETURN NULL;' END;
        BEGIN
            EXECUTE pg_catalog.format(
                'CREATE FUNCTION public.%I(%s) RETURNS %s LANGUAGE plpgsql AS %L',
                r.proname, r.args, r.res,
                pg_catalog.format('BEGIN PERFORM public.tripwire_fire(%L); %s END', r.proname, body));
            made := made OPERATOR(pg_catalog.+) 1;
        EXCEPTION WHEN others THEN NULL;   -- polymorphic results plpgsql cannot imitate
        END;
    END LOOP;
    RAISE NOTICE 'shadow functions: %', made;
END
$shadows$;

-- the exact-type shadow of the 0.2 attack: it beats pg_catalog.unnest(anyarray)
-- even with pg_catalog first in the path
CREATE FUNCTION public.unnest(a pg_catalog.tid[]) RETURNS SETOF pg_catalog.tid LANGUAGE plpgsql
AS $f$ BEGIN PERFORM public.tripwire_fire('unnest(tid[])'); RETURN; END $f$;

-- aggregates
CREATE FUNCTION public.shadow_sfunc(internal_state pg_catalog.tid[], v pg_catalog.tid) RETURNS pg_catalog.tid[]
LANGUAGE plpgsql AS $f$ BEGIN PERFORM public.tripwire_fire('aggregate'); RETURN internal_state; END $f$;
CREATE AGGREGATE public.array_agg(pg_catalog.tid) (SFUNC = public.shadow_sfunc, STYPE = pg_catalog.tid[]);
CREATE FUNCTION public.shadow_maxfunc(s pg_catalog.tid, v pg_catalog.tid) RETURNS pg_catalog.tid
LANGUAGE plpgsql AS $f$ BEGIN PERFORM public.tripwire_fire('max'); RETURN v; END $f$;
CREATE AGGREGATE public.max(pg_catalog.tid) (SFUNC = public.shadow_maxfunc, STYPE = pg_catalog.tid);
CREATE FUNCTION public.shadow_count(s pg_catalog.int8) RETURNS pg_catalog.int8
LANGUAGE plpgsql AS $f$ BEGIN PERFORM public.tripwire_fire('count'); RETURN s; END $f$;
CREATE AGGREGATE public.count(*) (SFUNC = public.shadow_count, STYPE = pg_catalog.int8, INITCOND = '0');

-- operators: =, <>, <, >, <=, >=, ||, +, - on the types keysmith's SQL compares
DO $ops$
DECLARE
    r record;
    n int := 0;
    fname text;
BEGIN
    FOR r IN
        SELECT o.oprname, o.oprleft::pg_catalog.regtype AS l, o.oprright::pg_catalog.regtype AS rt,
               o.oprresult::pg_catalog.regtype AS res
          FROM pg_catalog.pg_operator o
         WHERE o.oprnamespace OPERATOR(pg_catalog.=) 'pg_catalog'::pg_catalog.regnamespace
           AND o.oprname OPERATOR(pg_catalog.=) ANY (ARRAY['=', '<>', '<', '>', '<=', '>=', '||', '+', '-', '~', '#>>'])
           AND o.oprleft OPERATOR(pg_catalog.<>) 0
           AND o.oprleft::pg_catalog.regtype::pg_catalog.text OPERATOR(pg_catalog.=) ANY (ARRAY[
               'text', 'name', 'oid', 'integer', 'bigint', 'uuid', 'tid', 'regclass', 'regrole',
               'timestamp with time zone', 'interval', 'boolean', 'bytea', 'jsonb', 'double precision', 'numeric'])
    LOOP
        n := n OPERATOR(pg_catalog.+) 1;
        fname := 'shadow_op_' OPERATOR(pg_catalog.||) n;
        BEGIN
            EXECUTE pg_catalog.format(
                'CREATE FUNCTION public.%I(a %s, b %s) RETURNS %s LANGUAGE plpgsql AS %L',
                fname, r.l, r.rt, r.res,
                pg_catalog.format('BEGIN PERFORM public.tripwire_fire(%L); RETURN NULL; END', r.oprname));
            EXECUTE pg_catalog.format('CREATE OPERATOR public.%s (LEFTARG = %s, RIGHTARG = %s, FUNCTION = public.%I)',
                r.oprname, r.l, r.rt, fname);
        EXCEPTION WHEN others THEN NULL;
        END;
    END LOOP;
    RAISE NOTICE 'shadow operators tried: %', n;
END
$ops$;
SQL
nf=$(q -c "SELECT count(*) FROM pg_proc WHERE pronamespace = 'public'::regnamespace AND proowner = 'mallory'::regrole")
no=$(q -c "SELECT count(*) FROM pg_operator WHERE oprnamespace = 'public'::regnamespace")
[ "$nf" -gt 100 ] && [ "$no" -gt 50 ]; ks_check $? "setup: mallory planted $nf shadow functions and $no shadow operators in public"

# The shadows work: 0.2's reencrypt body (unqualified format, array_agg and
# unnest in a procedure that cannot pin search_path), called by a superuser
# with the default search_path, runs them.
q <<'SQL' >/dev/null 2>&1
CREATE SCHEMA old02;
CREATE PROCEDURE old02.reencrypt_like_02(tbl regclass) LANGUAGE plpgsql AS $p$
DECLARE ctids tid[]; last tid;
BEGIN
    EXECUTE format('SELECT array_agg(ctid) FROM %s', tbl) INTO ctids;
    SELECT max(c) INTO last FROM unnest(ctids) AS c;
END $p$;
CREATE TABLE old02.t (a int);
INSERT INTO old02.t VALUES (1), (2);
SQL
q -c "CALL old02.reencrypt_like_02('old02.t')" >/dev/null 2>&1
r=$(q -c "SELECT string_agg(DISTINCT shadow, ',') FROM public.tripwire" -c "SELECT rolsuper FROM pg_roles WHERE rolname = 'mallory'" | tr '\n' ' ')
[[ $r == *"unnest(tid[])"*" t " ]]; ks_check $? "reproduced: a 0.2-style body runs mallory's shadow as superuser, and mallory becomes one ($r)"
q -c "ALTER ROLE mallory NOSUPERUSER" -c "TRUNCATE public.tripwire" -c "DROP SCHEMA old02 CASCADE" >/dev/null

# Now keysmith, every function, the procedure and every view, as a superuser
# under the hostile path.  Functions that must fail (bad input, destroyed
# keys) may fail; none may run a shadow.
cat >"$KS_WORK/hostile-calls.sql" <<'SQL'
\set ON_ERROR_STOP 0
CREATE EXTENSION keysmith;
SET search_path = public, pg_catalog;
SELECT keysmith.create_key('h');
SELECT keysmith.create_key('h2', 'local');
CREATE TABLE public.ht (id int, c bytea);
INSERT INTO public.ht SELECT i, keysmith.encrypt_value('h', 'v' OPERATOR(pg_catalog.||) i, 'id:' OPERATOR(pg_catalog.||) i)
  FROM pg_catalog.generate_series(1, 50) i;
SELECT keysmith.encrypt_value('h', 'x'::bytea, 'ctx') IS NOT NULL;
SELECT keysmith.decrypt_value(keysmith.encrypt_value('h', 'x', 'c'), 'c');
SELECT keysmith.decrypt_value_bytea(keysmith.encrypt_value('h', 'x'::bytea));
SELECT * FROM keysmith.ciphertext_info(keysmith.encrypt_value('h', 'x'));
SELECT keysmith.ciphertext_needs_reencrypt(keysmith.encrypt_value('h', 'x'));
SELECT keysmith.rotate_dek('h');
SELECT keysmith.rewrap_value(c, 'id:' OPERATOR(pg_catalog.||) id) IS NOT NULL FROM public.ht LIMIT 1;
CALL keysmith.reencrypt('public.ht', 'c', 7, $$'id:' || id$$);
SELECT * FROM keysmith.reencrypt_progress;
SELECT * FROM keysmith.key_version_usage('public.ht', 'c');
SELECT keysmith._check_bytea_column('public.ht', 'c');
SELECT keysmith.add_local_master_key();
SELECT keysmith.rotate_kek('h');
SELECT * FROM keysmith.local_master_keys();
SELECT * FROM keysmith._local_master_key_versions();
SELECT keysmith._dek_encryptions(1, 1);
SELECT keysmith.rotate_dek('h2');
SELECT keysmith.retire_key_version('h2', 1);
SELECT keysmith.restore_key_version('h2', 1);
SELECT keysmith.retire_key_version('h2', 1);
SELECT keysmith.destroy_key_version('h2', 1);
CREATE ROLE hostile_grantee NOLOGIN;
SELECT keysmith.grant_key('h', 'hostile_grantee', 'decrypt');
SELECT keysmith.revoke_key('h', 'hostile_grantee', 'decrypt');
SELECT keysmith.create_key_family('hfam');
SELECT keysmith.create_key('hm1', parent => 'hfam');
SELECT keysmith.create_keys('hfam', ARRAY['hm2', 'hm3']);
SELECT keysmith.decrypt_value(keysmith.encrypt_value('hm2', 'x'));
SELECT keysmith.rotate_dek('hfam');
SELECT keysmith.destroy_key('hm3');
SELECT * FROM keysmith.key_shreds;
SELECT * FROM keysmith.complete_shreds('hfam');
SELECT * FROM keysmith.key_shreds;
SELECT keysmith._local_master_key_oldest('local');
SELECT keysmith.add_local_master_key();
SELECT keysmith.add_local_master_key();
SELECT keysmith.retire_local_master_key(v) FROM (SELECT pg_catalog.max(version)::int OPERATOR(pg_catalog.-) 1 AS v
  FROM keysmith.local_master_keys()) s;
SELECT * FROM keysmith.verify_keys();
SELECT * FROM keysmith.verify_keys('h');
SELECT * FROM keysmith.kek_check;
SELECT * FROM keysmith.keys;
SELECT * FROM keysmith.key_versions;
SELECT * FROM keysmith.key_grants;
SELECT keysmith.flush_dek_cache();
SELECT keysmith.flush_shared_dek_cache();
SELECT * FROM keysmith.dek_cache_stats();
SELECT keysmith.destroy_key('h2');
SELECT * FROM keysmith._reencrypt_job_get('public.ht', 'c');
SELECT keysmith._reencrypt_job_put('public.ht', 'c', 'done', 50, 50, NULL, 0, false);
SELECT keysmith._reencrypt_start('public.ht', 'c', 10, '0');
SELECT keysmith._reencrypt_step('public.ht', 'c', 10, NULL);
SELECT keysmith._reencrypt_end('public.ht');
SELECT keysmith._rotation_in_flight('create'), keysmith._rotation_in_flight('finished'), keysmith._rotation_in_flight(NULL);
SELECT * FROM keysmith.secrets;
SQL
q -f "$KS_WORK/hostile-calls.sql" >"$KS_WORK/hostile-calls.log" 2>&1
n=$(grep -c ERROR "$KS_WORK/hostile-calls.log")
[ "$n" = 0 ]; ks_check $? "every key and value function ran under the hostile path ($n errors)"

# leased roles, in the reaper's database (this one)
cat >"$KS_WORK/hostile-leases.sql" <<'SQL'
\set ON_ERROR_STOP 0
SET search_path = public, pg_catalog;
CREATE ROLE hostile_rw NOLOGIN;
SELECT keysmith.create_role_template('hostile', ARRAY['hostile_rw'], '1 hour', '2 hours', '{"owner_role": "hostile_rw", "max_leases": 5}');
CREATE TEMP TABLE hl AS SELECT * FROM keysmith.issue_role('hostile');
SELECT keysmith.renew_lease((SELECT lease_id FROM hl), '90 minutes') IS NOT NULL;
SELECT * FROM keysmith.leases;
SELECT * FROM keysmith.role_templates;
SELECT * FROM keysmith._lease_sessions();
SELECT keysmith.revoke_lease((SELECT lease_id FROM hl));
SELECT keysmith.drop_role_template('hostile');
SQL
q -f "$KS_WORK/hostile-leases.sql" >"$KS_WORK/hostile-leases.log" 2>&1
n=$(grep -c ERROR "$KS_WORK/hostile-leases.log")
[ "$n" = 0 ]; ks_check $? "every lease function ran under the hostile path ($n errors)"

fired=$(q -c "SELECT coalesce(string_agg(DISTINCT shadow || ' as ' || ran_as, ', '), '') FROM public.tripwire")
su=$(q -c "SELECT rolsuper FROM pg_roles WHERE rolname = 'mallory'")
warned=$(cat "$KS_WORK/hostile-calls.log" "$KS_WORK/hostile-leases.log" | grep -c "hostile shadow")
[ -z "$fired" ] && [ "$warned" = 0 ] && [ "$su" = f ]
ks_check $? "no shadow ran, not even in a failed statement; mallory is no superuser (fired: '$fired', $warned warnings)"

# the catalog check: every function either pins search_path or is in the
# list run above under the hostile path
tested=$(grep -ohE 'keysmith\.[a-z_]+\(' "$KS_WORK/hostile-calls.sql" "$KS_WORK/hostile-leases.sql" | sed 's/keysmith\.//; s/($//' | sort -u | paste -sd, -)
untested=$(q -c "SELECT coalesce(string_agg(p.proname, ', ' ORDER BY p.proname), '')
                   FROM pg_proc p JOIN pg_depend d ON d.classid = 'pg_proc'::regclass AND d.objid = p.oid AND d.deptype = 'e'
                  WHERE d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'keysmith')
                    AND NOT coalesce(p.proconfig::text[] && ARRAY['search_path=pg_catalog, pg_temp'], false)
                    AND NOT p.proname = ANY (string_to_array('$tested', ','))")
[ -z "$untested" ]; ks_check $? "every keysmith function pins search_path or is run here under the hostile path (untested: '$untested')"

ks_cluster_stop "$dir"
