#!/usr/bin/env bash
# test/integration/invalidation.sh
#
# Another backend stops using a rotated, retired or destroyed DEK, and sees
# grants and revokes, by its next transaction: session A keeps one
# connection open (fed through a FIFO) with DEKs cached while session B
# changes the key.  And a backend's own key change reaches its key-state
# cache at once, even in a backend that never encrypted or decrypted (so has
# no DEK cache): rotate_dek and ciphertext_needs_reencrypt in one statement.
set -uo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
ks_plan 9
. "$KS_CLUSTER/env"
KS_DB=ks_inval    # of q (test/lib.sh)

psql -X -q -d postgres -c 'DROP DATABASE IF EXISTS ks_inval' -c 'CREATE DATABASE ks_inval'
q <<'SQL' >/dev/null
CREATE EXTENSION keysmith;
SELECT keysmith.create_key('inv');
CREATE ROLE inv_app LOGIN IN ROLE keysmith_user;
CREATE TABLE v (name text PRIMARY KEY, c bytea);
GRANT SELECT ON v TO inv_app;
INSERT INTO v VALUES ('one', keysmith.encrypt_value('inv', 'first'));
SQL

fifo=$KS_WORK/inval.fifo
out=$KS_WORK/inval.out
rm -f "$fifo"; mkfifo "$fifo"
psql -X -q -t -A -v VERBOSITY=verbose -d ks_inval <"$fifo" >"$out" 2>&1 &
a=$!
exec 3>"$fifo"
# send SQL to session A and wait until its marker line appears
k=0
ask() {
    k=$((k + 1))
    printf '%s\n\\echo MARK%s\n' "$1" "$k" >&3
    for _ in $(seq 1 100); do grep -q "^MARK$k\$" "$out" && return 0; sleep 0.05; done
    return 1
}
last() { sed -n "/^MARK$((k - 1))\$/,/^MARK$k\$/p" "$out" | grep -v '^MARK'; }

ask "SELECT 1;"
ask "SET ROLE inv_app; SELECT keysmith.decrypt_value(c) FROM v WHERE name = 'one';"
[ "$(last)" = first ]; ks_check $? "session A decrypts (and caches the DEK)"
ask "SELECT (keysmith.ciphertext_info(keysmith.encrypt_value('inv', 'x'))).key_version;"
[ "$(last)" = 1 ]; ks_check $? "session A encrypts under version 1"

q -c "SELECT keysmith.rotate_dek('inv')" >/dev/null
ask "SELECT (keysmith.ciphertext_info(keysmith.encrypt_value('inv', 'x'))).key_version;"
[ "$(last)" = 2 ]; ks_check $? "after B rotates, A's next transaction encrypts under version 2"

q -c "SELECT keysmith.retire_key_version('inv', 1)" >/dev/null
ask "SELECT keysmith.decrypt_value(c) FROM v WHERE name = 'one';"
grep -q 'KS009' <<<"$(last)"; ks_check $? "after B retires version 1, A's cached DEK no longer decrypts"

q -c "SELECT keysmith.restore_key_version('inv', 1)" >/dev/null
ask "SELECT keysmith.decrypt_value(c) FROM v WHERE name = 'one';"
[ "$(last)" = first ]; ks_check $? "after B restores it, A decrypts again"

q -c "SELECT keysmith.revoke_key('inv', 'keysmith_user', 'decrypt')" >/dev/null
ask "SELECT keysmith.decrypt_value(c) FROM v WHERE name = 'one';"
grep -q '42501' <<<"$(last)"; ks_check $? "after B revokes decrypt, A is refused"
q -c "SELECT keysmith.grant_key('inv', 'keysmith_user', 'decrypt')" >/dev/null
ask "SELECT keysmith.decrypt_value(c) FROM v WHERE name = 'one';"
[ "$(last)" = first ]; ks_check $? "after B grants it back, A decrypts"

q -c "SELECT keysmith.destroy_key_version('inv', 1)" >/dev/null
ask "SELECT keysmith.decrypt_value(c) FROM v WHERE name = 'one';"
grep -q 'KS010' <<<"$(last)"; ks_check $? "after B destroys version 1, A's cached copy is gone too"

exec 3>&-
wait $a

# a fresh backend that only asked ciphertext_needs_reencrypt: its key-state
# memo must not survive its own rotate_dek (the key store flushes it)
q -c "SELECT keysmith.create_key('inv2')" >/dev/null
ct2=$(q -c "SELECT encode(keysmith.encrypt_value('inv2', 'x'), 'hex')")
r=$(q -c "SELECT keysmith.ciphertext_needs_reencrypt(decode('$ct2', 'hex'))" \
      -c "SELECT keysmith.rotate_dek('inv2') > 1, keysmith.ciphertext_needs_reencrypt(decode('$ct2', 'hex'))" | tr '\n' ' ')
[ "$r" = "f t|t " ]; ks_check $? "a backend with no DEK cache sees its own rotate_dek in the same statement ($r)"
psql -X -q -d postgres -c 'DROP DATABASE ks_inval' -c 'DROP ROLE inv_app'
