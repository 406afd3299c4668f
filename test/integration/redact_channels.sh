#!/usr/bin/env bash
# test/integration/redact_channels.sh
#
# Issue 20's leak count: plaintext given to keysmith's functions as literals
# (or as bind parameters) must not reach the server log on any channel.
# One cluster preloads keysmith, pgaudit (Debian's postgresql-15-pgaudit)
# and auto_explain.  Each channel is switched on alone (ALTER SYSTEM, so the
# rotation worker follows it too):
#
#   audit_all      pgaudit.log = 'all'
#   audit_rw       pgaudit.log = 'read,write'
#   audit_param    pgaudit.log = 'all', pgaudit.log_parameter = on
#   log_statement  log_statement = 'all'
#   min_duration   log_min_duration_statement = 0
#   auto_explain   log_min_duration 0, log_analyze, log_verbose,
#                  log_nested_statements
#   auto_explain_json  the same, log_format = json
#   errors         nothing but the defaults (ERROR, CONTEXT, STATEMENT:)
#
# and the same statements run in it twice, with keysmith.redact_statements
# off and then on, each time with markers of their own: encrypt_value in
# SELECT, INSERT, UPDATE and a DO block; decrypt_value compared in WHERE,
# with a string and (cast) with a number, which a plan prints unquoted;
# create_secret (JSON options, so pgaudit doubles quotes) and
# put_secret_value; a literal with a double quote; a card number as a
# numeric literal; PREPARE/EXECUTE; bind parameters (pgbench -M extended);
# a function whose body calls encrypt_value with a literal; failing DO
# blocks and a failing function (CONTEXT); and a rotation whose SCRAM
# verifier the worker writes through a parameter.  The distinct markers
# found in the log are counted per channel.  With redaction off every
# channel must show some (the count can fail), with it on none.  The table
# is printed as "# channel off on".
#
# Then what redaction must not damage: pgaudit's ids and fields, plans'
# numbers, statements that call no keysmith function.
set -uo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
. "$ROOT/test/lib.sh"
ks_plan 15

channels="audit_all audit_rw audit_param log_statement min_duration auto_explain auto_explain_json errors"
settings() {
    case $1 in
        audit_all) echo "pgaudit.log = 'all'" ;;
        audit_rw) echo "pgaudit.log = 'read,write'" ;;
        audit_param) echo "pgaudit.log = 'all'"; echo "pgaudit.log_parameter = on" ;;
        log_statement) echo "log_statement = 'all'" ;;
        min_duration) echo "log_min_duration_statement = 0" ;;
        auto_explain|auto_explain_json)
            [ "$1" = auto_explain_json ] && echo "auto_explain.log_format = json"
            echo "auto_explain.log_min_duration = 0"
            echo "auto_explain.log_analyze = on"
            echo "auto_explain.log_verbose = on"
            echo "auto_explain.log_nested_statements = on" ;;
        errors) ;;
    esac
}

dir=$KS_WORK/extra-redact-channels
ks_cluster_init "$dir"
{
    echo "shared_preload_libraries = 'keysmith, pgaudit, auto_explain'"
    echo "keysmith.rotation_naptime = '200ms'"
    echo "log_parameter_max_length = -1"
    echo "log_parameter_max_length_on_error = -1"
    echo "pgaudit.log = 'none'"
    echo "include_if_exists = 'channel.conf'"
} >>"$dir/data/postgresql.conf"
ks_cluster_start "$dir"
. "$dir/env"
KS_ON_ERROR_STOP=0    # q (test/lib.sh) goes on after an error
log=$dir/server.log

q >/dev/null <<'SQL'
CREATE EXTENSION pgaudit;
CREATE EXTENSION keysmith;
SELECT keysmith.create_key('card');
CREATE TABLE t (id int PRIMARY KEY, c bytea);
CREATE TABLE nums (c bytea);
INSERT INTO nums VALUES (keysmith.encrypt_value('card', '12345'));
SQL
[ "$(q -c "SELECT count(*) FROM pg_extension WHERE extname IN ('pgaudit', 'keysmith')")" = 2 ] &&
    [ "$(q -c "SHOW shared_preload_libraries")" = "keysmith, pgaudit, auto_explain" ]
ks_check $? "setup: keysmith, pgaudit and auto_explain preloaded, a key and a table"

# use CHANNEL on|off: the channel's settings and redaction, in channel.conf
# (read by every new session and by the worker at its next round); waits
# until a new session sees them
use() {
    local redact=$2
    {
        settings "$1"
        echo "keysmith.redact_statements = $redact"
    } >"$dir/data/channel.conf"
    chown "$PG_OSUSER": "$dir/data/channel.conf"
    q -c "SELECT pg_reload_conf()" >/dev/null
    for _ in $(seq 1 100); do
        [ "$(q -c "SHOW keysmith.redact_statements")" = "$redact" ] && return 0
        sleep 0.05
    done
    return 1
}

# run TAG N: every statement of the list, with markers MK<TAG>-<kind>, the
# numeric markers 4111<N>0777 and 41<N>0778, objects named after TAG; then a rotation,
# whose verifier is appended to $KS_WORK/verifiers-TAG
run() {
    local tag=$1 n=$2 m="MK$1-"
    psql -X -q -d postgres >/dev/null 2>&1 <<SQL
SELECT keysmith.encrypt_value('card', '${m}sel', 'ctx-${m}cxa');
INSERT INTO t VALUES ($n, keysmith.encrypt_value('card', '${m}ins'));
UPDATE t SET c = keysmith.encrypt_value('card', '${m}upd') WHERE id = $n;
DO \$\$BEGIN PERFORM keysmith.encrypt_value('card', '${m}do'); END\$\$;
SELECT id FROM t WHERE keysmith.decrypt_value(c) = '${m}whr';
SELECT count(*) FROM nums WHERE keysmith.decrypt_value(c)::int = 41${n}0778;
SELECT keysmith.create_secret('s_$tag', 'card', 'none', '{"keep_versions": 3}', '${m}crs');
SELECT keysmith.put_secret_value('s_$tag', '${m}put');
SELECT keysmith.encrypt_value('card', '${m}dq"x') AS "quoted ""alias""";
SELECT keysmith.encrypt_value('card', 4111${n}0777::text);
PREPARE p_$tag(text) AS SELECT keysmith.encrypt_value('card', \$1);
EXECUTE p_$tag('${m}exe');
CREATE FUNCTION f_$tag() RETURNS void LANGUAGE plpgsql
    AS \$\$BEGIN PERFORM keysmith.encrypt_value('card', '${m}fnb'); END\$\$;
SELECT f_$tag();
DO \$\$BEGIN PERFORM keysmith.create_secret('s_$tag', 'card', 'none', '{}', '${m}ctx'); END\$\$;
DO \$\$BEGIN PERFORM keysmith.put_secret_value('none_$tag', '${m}ctp'); END\$\$;
CREATE FUNCTION g_$tag() RETURNS void LANGUAGE plpgsql
    AS \$\$BEGIN PERFORM keysmith.put_secret_value('none_$tag', '${m}gfn'); END\$\$;
SELECT g_$tag();
SELECT 'PLAIN$tag-not-keysmith';
SQL
    # bind parameters: the extended protocol, as drivers send values
    printf '%s\n' "SELECT keysmith.encrypt_value('card', :v);" \
        "SELECT keysmith.put_secret_value(:s, :w);" >"$KS_WORK/bind.sql"
    "$PG_BIN/pgbench" -n -t 1 -M extended -f "$KS_WORK/bind.sql" -D "v=${m}bnd" \
        -D "s=s_$tag" -D "w=${m}bnp" postgres >/dev/null 2>&1
    # a rotation: the worker writes the pending verifier as a parameter
    q -c "CREATE ROLE r_$tag LOGIN" \
      -c "SELECT keysmith.create_secret('r_$tag', 'card', 'postgres_role', '{\"role\": \"r_$tag\"}')" >/dev/null
    ks_wait_rotation "$(q -c "SELECT keysmith.rotate_secret('r_$tag')")" >/dev/null
    q -c "SELECT rolpassword FROM pg_authid WHERE rolname = 'r_$tag'" >"$KS_WORK/verifiers-$tag"
}

# leaks TAG N: how many distinct markers of run TAG N are in the log
leaks() {
    local tag=$1 n=$2 count v
    count=$(grep -oE "MK$tag-[a-z]+" "$log" | sort -u | wc -l)
    grep -q "4111${n}0777" "$log" && count=$((count + 1))
    grep -q "41${n}0778" "$log" && count=$((count + 1))
    # the verifier's salt, StoredKey or ServerKey, in any form
    v=$(cat "$KS_WORK/verifiers-$tag")
    if [ -n "$v" ] && grep -qF -e "$(echo "$v" | cut -d'$' -f2 | cut -d: -f2)" \
        -e "$(echo "$v" | cut -d'$' -f3 | cut -d: -f1)" -e "$(echo "$v" | cut -d: -f3)" "$log"; then
        count=$((count + 1))
    fi
    echo "$count"
}

# found TAG: the kinds of markers of run TAG in the log
found() {
    grep -oE "MK$1-[a-z]+" "$log" | sed "s/^MK$1-//" | sort -u | tr '\n' ' '
}

i=0
table=""
for ch in $channels; do
    i=$((i + 1))
    use "$ch" off && run "${ch}_off" "${i}1"
    use "$ch" on && run "${ch}_on" "${i}2"
    off=$(leaks "${ch}_off" "${i}1")
    on=$(leaks "${ch}_on" "${i}2")
    table="$table$(printf '# %-17s %4s %4s   off: %s' "$ch" "$off" "$on" "$(found "${ch}_off")")"$'\n'
    [ "$on" = 0 ] || table="$table$(printf '# %-17s %4s %4s    on: %s' "" "" "" "$(found "${ch}_on")")"$'\n'
    [ "$off" -gt 0 ] && [ "$on" = 0 ]
    ks_check $? "$ch: with redaction off $off distinct markers reach the log, with it on $on"
done
printf '# %-17s %4s %4s\n' channel off on
printf '%s' "$table"
use errors on

# what must stay
audit=$(grep -c 'AUDIT: ' "$log")
audit_ids=$(grep -cE 'AUDIT: (SESSION|OBJECT),[0-9]+,[0-9]+,[A-Z]+,' "$log")
[ "$audit" -gt 0 ] && [ "$audit" = "$audit_ids" ]
ks_check $? "every AUDIT record keeps its statement and substatement ids ($audit_ids of $audit)"
grep -qF "FUNCTION,EXECUTE,FUNCTION,keysmith.encrypt_value,\"SELECT keysmith.encrypt_value('***', '***') AS \"\"quoted \"\"\"\"alias\"\"\"\"\"\";\"" "$log" &&
    grep -qF "READ,SELECT,,,\"PREPARE p_audit_param_on(text) AS SELECT keysmith.encrypt_value('***', \$1);\",***" "$log" &&
    grep -qF "READ,SELECT,,,\"SELECT keysmith.put_secret_value(\$1, \$2);\",\"***,***\"" "$log" &&
    grep -qF "FUNCTION,DO,,,\"DO \$\$BEGIN PERFORM keysmith.encrypt_value('***', '***'); END\$\$;\"" "$log"
ks_check $? "pgaudit's redacted records keep their CSV shape: the statement with '***', each parameter ***"
grep -qE "Output: keysmith.encrypt_value\('\*\*\*'::text, '\*\*\*'::text" "$log" &&
    grep -qE "Filter: \(keysmith.decrypt_value\(t.c, NULL::text\) = '\*\*\*'::text\)" "$log" &&
    grep -qE "\(actual time=[0-9.]+\.\.[0-9.]+ rows=[0-9]+ loops=[0-9]+\)" "$log"
ks_check $? "auto_explain's plans keep their shape and numbers; Output: and Filter: constants are '***'"
grep -qF "SQL statement \"SELECT keysmith.create_secret('***', '***', '***', '***', '***')\"" "$log" &&
    grep -qF "SQL statement \"SELECT keysmith.put_secret_value('***', '***')\"" "$log" &&
    grep -qF "PL/pgSQL function g_errors_on() line 1 at PERFORM" "$log" &&
    grep -qF "STATEMENT:  DO \$\$BEGIN PERFORM keysmith.put_secret_value('***', '***'); END\$\$;" "$log"
ks_check $? "failing DO blocks and functions keep their CONTEXT and STATEMENT: lines, with '***' for the values"
n=$(grep -c "PLAIN.*-not-keysmith" "$log")
[ "$n" -gt 0 ]
ks_check $? "statements that call no keysmith function are logged as they are ($n lines)"
grep -qF "parameters: \$1 = '***'" "$log" && grep -qF "unnamed portal with parameters: \$1 = '***', \$2 = '***'" "$log"
ks_check $? "bind parameters of a sensitive statement are '***' in DETAIL and CONTEXT lines"

ks_cluster_stop "$dir"
