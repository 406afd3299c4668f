#!/usr/bin/env bash
# test/integration/redact.sh
#
# Finding 11 of docs/security.md: plaintext typed into SQL must not reach
# the server log.  A cluster that logs everything (log_statement = 'all',
# log_min_duration_statement = 0, log_min_error_statement = error, bind
# parameters in full) runs encrypt_value with marked plaintexts: in a plain
# statement, in one that fails, in a PREPARE/EXECUTE pair and through a
# function.  No marker may be in the log, and the redacted statements must
# be (the shape is kept).  Two ways the red team got values past it: a
# backslash-quoted literal with standard_conforming_strings off (the scan
# read the quote as the string's end), and errors that quote the value
# back (a date that does not exist, a bigint out of range, invalid JSON in
# DETAIL and CONTEXT, a bad cast in a DO block).  With
# keysmith.redact_statements off, the same statements' markers are in the
# log: the checks can fail.
set -uo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
. "$ROOT/test/lib.sh"
ks_plan 13

dir=$KS_WORK/extra-redact
ks_cluster_init "$dir"
{
    echo "log_statement = 'all'"
    echo "log_min_duration_statement = 0"
    echo "log_min_error_statement = error"
    echo "log_parameter_max_length = -1"
    echo "log_parameter_max_length_on_error = -1"
} >>"$dir/data/postgresql.conf"
ks_cluster_start "$dir"
. "$dir/env"
KS_ON_ERROR_STOP=0    # q (test/lib.sh) goes on after an error
log=$dir/server.log

q -c "CREATE EXTENSION keysmith" -c "SELECT keysmith.create_key('card')" >/dev/null
ks_check $? "setup: a key on a cluster that logs every statement"

r=$(q -c "SELECT keysmith.decrypt_value(keysmith.encrypt_value('card', 'MARK-A-4111111111111111', 'ctx-MARK-B'), 'ctx-MARK-B')")
[ "$r" = MARK-A-4111111111111111 ]; ks_check $? "encrypt_value and decrypt_value work as usual"
q -c "SELECT keysmith.encrypt_value('no-such-key', E'MARK-C\\'s card', \$t\$MARK-D\$t\$)" >/dev/null 2>&1
q -c "PREPARE ins(text) AS SELECT keysmith.encrypt_value('card', \$1)" -c "EXECUTE ins('MARK-E')" >/dev/null
q -c "SELECT keysmith.encrypt_value('card', 4111111111111111::text)" >/dev/null
sleep 0.5

n=$(grep -c 'MARK-\|4111111111111111' "$log")
ks_check $n "no marked plaintext, context or card number is in the server log ($n lines)"
grep -qF "statement: SELECT keysmith.decrypt_value(keysmith.encrypt_value('***', '***', '***'), '***')" "$log"
ks_check $? "log_statement keeps the statement's shape"
grep -qF "ERROR:  key \"no-such-key\" does not exist" "$log" && \
grep -qF "STATEMENT:  SELECT keysmith.encrypt_value('***', E'***', '***')" "$log"
ks_check $? "a failing statement's STATEMENT: line is redacted too"
grep -qF "statement: EXECUTE ins('***')" "$log" && grep -qF "prepare: PREPARE ins(text) AS SELECT keysmith.encrypt_value('***', \$1)" "$log"
ks_check $? "EXECUTE of a prepared encrypt_value is redacted, with its PREPARE detail"
grep -qE "duration: [0-9.]+ ms" "$log"
ks_check $? "other lines keep their numbers (durations)"

# backslash escapes in plain strings; a plain string that ends in a
# backslash with the setting on, which the scan cannot tell apart
sco() { q -c "SET standard_conforming_strings = off" -c "SET escape_string_warning = off" "$@"; }
r=$(sco -c "SELECT keysmith.encrypt_value('card', 'MARK-H\\' MARK-H2 ') IS NOT NULL" -c "RESET standard_conforming_strings" \
    -c "SELECT keysmith.encrypt_value('card', 'C:\\', 'MARK-I') IS NOT NULL" 2>&1)
# errors that quote a constant back
bad() { q -c "SELECT keysmith.encrypt_value('card', $1)" 2>&1 | head -1; }
e1=$(bad "'1937-02-30'::date::text")
e2=$(bad "'98765432109876543210'::bigint::text")
e3=$(bad "'{\"a\": MARK-J}'::json::text")
e4=$(q -c "DO \$\$BEGIN PERFORM keysmith.encrypt_value('card', 'MARK-K'::int::text); END\$\$" 2>&1 | head -1)
sleep 0.5
n=$(grep -c 'MARK-H\|MARK-I' "$log")
[ "$r" = "$(printf 't\nt')" ] && [ "$n" = 0 ] &&
    grep -qF "statement: SELECT keysmith.encrypt_value('***', '***'" "$log"
ks_check_out $? "$r" "with standard_conforming_strings off a backslash-quoted literal is redacted, and so is a literal ending in a backslash with it on ($n lines)"
n=$(grep -c '1937-02-30\|98765432109876543210\|MARK-J\|MARK-K' "$log")
[[ $e1 == *"date/time field value out of range"* ]] && [[ $e2 == *"out of range for type bigint"* ]] &&
    [[ $e3 == *"invalid input syntax for type json"* ]] && [[ $e4 == *"invalid input syntax for type integer"* ]] &&
    [ "$n" = 0 ] && grep -qF 'ERROR:  date/time field value out of range: "***"' "$log" &&
    grep -qF 'DETAIL:  Token "***" is invalid.' "$log" && grep -qF 'CONTEXT:  JSON data, line 1: ***' "$log" &&
    grep -qF 'ERROR:  invalid input syntax for type integer: "***"' "$log"
ks_check_out $? "$e1 / $e2 / $e3 / $e4" "errors that quote a constant back (date, bigint, JSON in DETAIL and CONTEXT, a cast in a DO block) keep their shape, with *** for it ($n lines hold one)"

q -c "CREATE ROLE plain_user LOGIN" >/dev/null
out=$(psql -X -q -v VERBOSITY=verbose -d postgres -U plain_user -c "SET keysmith.redact_statements = off" 2>&1)
ks_sqlstate 42501 'permission denied to set parameter "keysmith.redact_statements"' "$out"
ks_check $? "only a superuser may turn redaction off"
q -c "SELECT 'MARK-F-not-keysmith'" >/dev/null
q -c "SET keysmith.redact_statements = off" -c "SELECT keysmith.encrypt_value('card', 'MARK-G-unredacted') IS NOT NULL" >/dev/null
sco -c "SET keysmith.redact_statements = off" -c "SELECT keysmith.encrypt_value('card', 'MARK-G\\' MARK-G-sco ') IS NOT NULL" >/dev/null
q -c "SET keysmith.redact_statements = off" -c "SELECT keysmith.encrypt_value('card', '1936-02-30'::date::text)" >/dev/null 2>&1
sleep 0.5
grep -q "MARK-F-not-keysmith" "$log"; ks_check $? "statements that call no keysmith function are logged as they are"
grep -q "MARK-G-unredacted" "$log"; ks_check $? "with keysmith.redact_statements off the plaintext is logged: the check above can fail"
grep -q "MARK-G-sco" "$log" && grep -qF 'ERROR:  date/time field value out of range: "1936-02-30"' "$log"
ks_check $? "so are, with it off, the backslash-quoted literal and the quoted-back date: the checks of both can fail"

ks_cluster_stop "$dir"
