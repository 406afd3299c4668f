#!/usr/bin/env bash
# test/integration/kms_vault.sh
#
# The vault_transit provider against test/kms/vault_server.py, a test
# server that imitates Vault's Transit API over HTTPS (no Vault can be
# installed here; the server's header says so), on loopback with a CA made
# here by openssl.  Keys wrap, unwrap and rotate their KEK through it; the
# token file is rotated on disk; a wrong token and a wrong namespace are
# denied; and each fault gets its SQLSTATE with nothing lost: 429 then
# success (retried), 500 to the end, a redirect (not followed: the target
# sees nothing), an oversized body, malformed JSON, latency past the
# timeout, a query cancel during a hung call, a certificate for another
# name, and the server down (create_key and rotate_kek leave nothing
# half-done).  Every value still decrypts at the end.
set -uo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
. "$ROOT/test/lib.sh"
ks_plan 26

V=$KS_WORK/vault
rm -rf "$V"; mkdir -p "$V"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done; wait 2>/dev/null; }
trap cleanup EXIT

# a CA, a certificate for 127.0.0.1, and one for another name
(
    cd "$V"
    openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 1 -subj /CN=keysmith-test-ca
    for n in good:IP:127.0.0.1 wrong:DNS:wrong.example; do
        name=${n%%:*}; san=${n#*:}
        openssl req -newkey rsa:2048 -nodes -keyout $name.key -out $name.csr -subj /CN=$name
        printf 'subjectAltName=%s\n' "$san" >$name.ext
        openssl x509 -req -in $name.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out $name.pem -days 1 -extfile $name.ext
    done
) >"$V/openssl.log" 2>&1
token=$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n')
control=$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n')
echo "$token" >"$V/server.tokens"
echo "$control" >"$V/control"
# keysmith's token file and CA file, readable by the server's OS user only
install -m 600 -o "$PG_OSUSER" /dev/null "$V/vault.token"
echo "$token" >"$V/vault.token"
install -m 644 "$V/ca.pem" "$V/ca-for-keysmith.pem"
chmod 711 "$V"

start_server() { # PORT CERT
    python3 "$ROOT/test/kms/vault_server.py" --port "$1" --cert "$V/$2.pem" --key "$V/$2.key" \
        --tokens "$V/server.tokens" --control "$V/control" --namespace team >>"$V/server.log" 2>&1 &
    pids+=($!)
    for _ in $(seq 1 100); do
        python3 -c "import socket,sys; s=socket.socket(); s.settimeout(0.2); sys.exit(s.connect_ex(('127.0.0.1', $1)))" && return 0
        sleep 0.1
    done
    return 1
}
P1=$(ks_free_port); start_server "$P1" good
P2=$(ks_free_port); start_server "$P2" good
P3=$(ks_free_port); start_server "$P3" wrong
main_pid=${pids[0]}
ctl() { # PORT METHOD PATH [BODY]
    python3 - "$@" <<'PY'
import json, ssl, sys, urllib.request
port, method, path = sys.argv[1:4]
body = sys.argv[4].encode() if len(sys.argv) > 4 else None
ctx = ssl.create_default_context(cafile=__import__("os").environ["VCA"])
req = urllib.request.Request("https://127.0.0.1:%s%s" % (port, path), data=body, method=method,
                             headers={"X-Test-Control": open(__import__("os").environ["VCTL"]).read().strip(),
                                      "X-Vault-Token": open(__import__("os").environ["VTOK"]).read().strip(),
                                      "X-Vault-Namespace": "team"})
print(urllib.request.urlopen(req, context=ctx).read().decode())
PY
}
export VCA=$V/ca.pem VCTL=$V/control VTOK=$V/server.tokens
fault() { ctl "$P1" POST /test/fault "$1" >/dev/null; }

dir=$KS_WORK/extra-kms-vault
ks_cluster_init "$dir"
ks_cluster_start "$dir"
. "$dir/env"
q() { psql -X -q -t -A -v ON_ERROR_STOP=1 -d postgres "$@"; }
qv() { psql -X -q -t -A -v VERBOSITY=verbose -d postgres "$@" 2>&1; }
opts() { # TIMEOUT_MS [PORT] [NAMESPACE]
    printf '{"url": "https://127.0.0.1:%s", "token_file": "%s", "ca_file": "%s", "namespace": "%s", "timeout_ms": "%s"}' \
        "${2:-$P1}" "$V/vault.token" "$V/ca-for-keysmith.pem" "${3:-team}" "$1"
}
decrypt_all() { q -c "SELECT count(*) FROM vt WHERE keysmith.decrypt_value(c, id::text) = 'v' || id"; }

ctl "$P1" POST /v1/transit/keys/app '{}' >/dev/null
q -c "CREATE EXTENSION keysmith" -c "SELECT keysmith.create_kms_provider('vault1', 'vault_transit', '$(opts 3000)')" >/dev/null
ks_check $? "three test servers with a CA made here; a vault_transit provider naming a token file, a CA file, a namespace"

out=$(qv -c "SELECT keysmith.create_key('vk0', 'vault1')")
ks_sqlstate 22023 'a key of KMS type vault_transit needs kms_key*' "$out"
ks_check $? "a key under vault_transit needs its Transit key's name (22023)"
q -c "SELECT keysmith.create_key('vk', 'vault1', 'app')" \
  -c "CREATE TABLE vt AS SELECT i AS id, keysmith.encrypt_value('vk', 'v' || i, i::text) AS c FROM generate_series(1, 100) i" >/dev/null
kv=$(q -c "SELECT kek_version FROM keysmith.key_versions WHERE key_name = 'vk'")
[ "$kv" = 1 ] && [ "$(decrypt_all)" = 100 ]
ks_check $? "a key wraps its DEK through Transit (KEK version $kv), and 100 values round-trip"
wrapped=$(q -c "SELECT convert_from(wrapped_dek, 'UTF8') FROM keysmith.key_version v JOIN keysmith.key k USING (key_id) WHERE k.name = 'vk'")
[[ $wrapped == vault:v1:* ]]
ks_check $? "the wrapped DEK is Transit's ciphertext, vault:v1:..."

ctl "$P1" POST /v1/transit/keys/app/rotate '{}' >/dev/null
n1=$(q -c "SELECT keysmith.rotate_kek('vk')"); n2=$(q -c "SELECT keysmith.rotate_kek('vk')")
kv=$(q -c "SELECT kek_version FROM keysmith.key_versions WHERE key_name = 'vk'")
[ "$n1" = 1 ] && [ "$n2" = 0 ] && [ "$kv" = 2 ] && [ "$(decrypt_all)" = 100 ]
ks_check $? "Transit key rotated: rotate_kek re-wraps once (decrypt, then encrypt: Transit's rewrap drops associated data), then has nothing to do; KEK version $kv; all values decrypt"

new=$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n')
echo "$new" >"$V/server.tokens"; echo "$new" >"$V/vault.token"; token=$new
[ "$(decrypt_all)" = 100 ]
ks_check $? "the token is rotated on disk (as Vault Agent does): the next call reads the new one"

echo "not-the-token" >"$V/server.tokens"
out=$(qv -c "SELECT count(keysmith.decrypt_value(c, id::text)) FROM vt")
echo "$token" >"$V/server.tokens"
ks_sqlstate KS016 'KMS provider "vault1" denied the request (HTTP 403): permission denied' "$out"
ks_check $? "a token Vault no longer accepts: denied (KS016)"
q -c "SELECT keysmith.alter_kms_provider('vault1', '$(opts 3000 "$P1" other)')" >/dev/null
out=$(qv -c "SELECT count(keysmith.decrypt_value(c, id::text)) FROM vt")
q -c "SELECT keysmith.alter_kms_provider('vault1', '$(opts 3000)')" >/dev/null
ks_sqlstate KS016 '*denied*' "$out"
ks_check $? "the wrong namespace: denied (KS016)"

before=$(ctl "$P1" GET /test/stats | python3 -c 'import json,sys; print(json.load(sys.stdin)["requests"])')
fault '{"mode": "429", "count": 1}'
ok=$(decrypt_all)
after=$(ctl "$P1" GET /test/stats | python3 -c 'import json,sys; print(json.load(sys.stdin)["requests"])')
[ "$ok" = 100 ] && [ $((after - before)) -ge 2 ]
ks_check $? "429 with Retry-After, then success: retried within the timeout ($((after - before)) requests)"

fault '{"mode": "500", "count": -1}'
out=$(qv -c "SELECT count(keysmith.decrypt_value(c, id::text)) FROM vt")
ks_sqlstate KS015 'KMS provider "vault1" (127.0.0.1:*) answered HTTP 500 until its time ran out' "$out"
st=$?; [ $st = 0 ] || echo "# $out" | head -3
ks_check $st "500 to the end: unavailable (KS015), after retries"
out=$(qv -c "SELECT keysmith.create_key('vk_down', 'vault1', 'app')")
n=$(q -c "SELECT count(*) FROM keysmith.key WHERE name = 'vk_down'")
ks_sqlstate KS015 '*' "$out" && [ "$n" = 0 ]
ks_check $? "create_key while the KMS fails leaves no key behind"
fault '{"mode": "none"}'
ctl "$P1" POST /v1/transit/keys/app/rotate '{}' >/dev/null
fault '{"mode": "500", "count": -1}'
w0=$(q -c "SELECT md5(wrapped_dek) || kek_version FROM keysmith.key_version v JOIN keysmith.key k USING (key_id) WHERE k.name = 'vk'")
out=$(qv -c "SELECT keysmith.rotate_kek('vk')")
w1=$(q -c "SELECT md5(wrapped_dek) || kek_version FROM keysmith.key_version v JOIN keysmith.key k USING (key_id) WHERE k.name = 'vk'")
ks_sqlstate KS015 '*' "$out" && [ "$w0" = "$w1" ]
ks_check $? "rotate_kek during an outage fails and changes nothing"
fault '{"mode": "none"}'

out=$(qv -c "SELECT count(keysmith.decrypt_value(c, id::text)) FROM vt")
[[ $out != *ERROR* ]]
ks_check $? "and once it answers again, every value decrypts"

fault "{\"mode\": \"redirect\", \"count\": -1, \"location\": \"https://127.0.0.1:$P2\"}"
out=$(qv -c "SELECT count(keysmith.decrypt_value(c, id::text)) FROM vt")
seen=$(ctl "$P2" GET /test/stats | python3 -c 'import json,sys; print(json.load(sys.stdin)["requests"])')
ks_sqlstate KS017 '*answered with a redirect (HTTP 307), which keysmith never follows' "$out" && [ "$seen" = 0 ]
ks_check $? "a redirect is never followed: bad response (KS017), and its target saw $seen requests"

fault '{"mode": "big", "count": -1}'
out=$(qv -c "SELECT count(keysmith.decrypt_value(c, id::text)) FROM vt")
ks_sqlstate KS017 '*answered more than 262144 bytes' "$out"
ks_check $? "an oversized body is cut off: bad response (KS017)"

fault '{"mode": "badjson", "count": -1}'
out=$(qv -c "SELECT count(keysmith.decrypt_value(c, id::text)) FROM vt")
ks_sqlstate KS017 '*answered something that is not Vault*' "$out"
ks_check $? "malformed JSON: bad response (KS017)"

fault '{"mode": "latency", "count": -1, "delay": 6}'
out=$(qv -c "SELECT count(keysmith.decrypt_value(c, id::text)) FROM vt")
ks_sqlstate KS015 '*' "$out"
ks_check $? "an answer slower than timeout_ms: unavailable (KS015)"

q -c "SELECT keysmith.alter_kms_provider('vault1', '$(opts 60000)')" >/dev/null
fault '{"mode": "latency", "count": -1, "delay": 30}'
out=$(PGOPTIONS='-c statement_timeout=1s' qv -c "SELECT count(keysmith.decrypt_value(c, id::text)) FROM vt")
ks_sqlstate 57014 'canceling statement due to statement timeout' "$out"
ks_check $? "a query cancel stops a hung KMS call (57014, not a 60 s wait)"
q -c "SELECT keysmith.alter_kms_provider('vault1', '$(opts 3000)')" >/dev/null
fault '{"mode": "none"}'

q -c "SELECT keysmith.alter_kms_provider('vault1', '$(opts 3000 "$P3")')" >/dev/null
out=$(qv -c "SELECT count(keysmith.decrypt_value(c, id::text)) FROM vt")
q -c "SELECT keysmith.alter_kms_provider('vault1', '$(opts 3000)')" >/dev/null
ks_sqlstate KS015 '*TLS certificate of 127.0.0.1:*does not verify*' "$out"
ks_check $? "a certificate for another name is refused (KS015, says so)"

out=$(qv -c "SELECT keysmith.alter_kms_provider('vault1', '{\"url\": \"http://127.0.0.1:$P1\", \"token_file\": \"/x\"}')")
ks_sqlstate 22023 'vault_transit needs option url, an https:// URL' "$out"
ks_check $? "plain http is refused (22023)"
out=$(qv -c "SELECT keysmith.create_kms_provider('vault2', 'vault_transit', '{\"url\": \"https://127.0.0.1:$P1\"}')")
ks_sqlstate 22023 'vault_transit needs option token_file*' "$out"
ks_check $? "a provider without a token file is refused (22023)"
out=$(qv -c "SELECT keysmith.create_kms_provider('vault2', 'vault_transit', '{\"url\": \"https://127.0.0.1:$P1\", \"token_file\": \"/t\", \"token\": \"s.abc\"}')")
ks_sqlstate 22023 'unknown option "token" for KMS type vault_transit' "$out"
ks_check $? "a token in the options is refused: options hold references only (22023)"

ok=$(decrypt_all)
[ "$ok" = 100 ]
ks_check $? "after every fault, all 100 values still decrypt"

kill "$main_pid"; wait "$main_pid" 2>/dev/null
out=$(qv -c "SELECT count(keysmith.decrypt_value(c, id::text)) FROM vt")
ks_sqlstate KS015 'KMS provider "vault1" (127.0.0.1:*) is unavailable*' "$out"
ks_check $? "the server down: unavailable (KS015), with a hint"
[[ $out == *"HINT:  The KMS provider named in the message did not answer in time"* ]]
ks_check $? "the hint says what to check"

n=$(grep -c -F -e "$token" -e "$control" "$dir/server.log")
[ "$n" = 0 ]
ks_check $? "no token in the server log ($n)"
ks_cluster_stop "$dir"
