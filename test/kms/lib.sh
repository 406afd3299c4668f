# test/kms/lib.sh: what the KMS integration tests share (sourced after
# test/lib.sh): a CA and certificates made here by openssl, starting a test
# server from test/kms/, and calling its control endpoints.

# Run first in a session that must reach the KMS: empties the shared DEK
# cache of the database (it prints nothing).
KMS_FRESH="SELECT FROM keysmith.flush_shared_dek_cache()"

# kms_ca DIR: in DIR, a CA (ca.pem), a certificate for 127.0.0.1
# (good.pem/.key) and one for another name (wrong.pem/.key); a copy of the
# CA for keysmith (ca-for-keysmith.pem) and the servers' control secret
# (control).  DIR becomes traversable by the server's OS user.
kms_ca() {
    local d=$1
    (
        cd "$d" || exit 1
        openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 1 -subj /CN=keysmith-test-ca
        for n in good:IP:127.0.0.1 wrong:DNS:wrong.example; do
            name=${n%%:*}; san=${n#*:}
            openssl req -newkey rsa:2048 -nodes -keyout $name.key -out $name.csr -subj /CN=$name
            printf 'subjectAltName=%s\n' "$san" >$name.ext
            openssl x509 -req -in $name.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out $name.pem -days 1 -extfile $name.ext
        done
    ) >"$d/openssl.log" 2>&1
    od -An -tx1 -N16 /dev/urandom | tr -d ' \n' >"$d/control"
    install -m 644 "$d/ca.pem" "$d/ca-for-keysmith.pem"
    chmod 711 "$d"
    export KMS_CA=$d/ca.pem KMS_CTL=$d/control
}

# kms_start LOG SCRIPT PORT CERT [ARGS...]: start test/kms/SCRIPT on
# 127.0.0.1:PORT with DIR/CERT.pem (DIR: that of kms_ca), appending its pid
# to the caller's pids array; returns once it accepts connections.
kms_start() {
    local log=$1 script=$2 port=$3 cert=$4; shift 4
    python3 "$ROOT/test/kms/$script" --port "$port" --cert "${KMS_CA%/*}/$cert.pem" \
        --key "${KMS_CA%/*}/$cert.key" --control "$KMS_CTL" "$@" >>"$log" 2>&1 &
    pids+=($!)
    for _ in $(seq 1 100); do
        python3 -c "import socket,sys; s=socket.socket(); s.settimeout(0.2); sys.exit(s.connect_ex(('127.0.0.1', $port)))" && return 0
        sleep 0.1
    done
    return 1
}

# kms_vault_tokens DIR: a random Vault token, in DIR/server.tokens for the
# test server and in DIR/vault.token (mode 0600, the server's OS user's)
# for keysmith; prints it.
kms_vault_tokens() {
    local token
    token=$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n')
    echo "$token" >"$1/server.tokens"
    install -m 600 -o "$PG_OSUSER" /dev/null "$1/vault.token"
    echo "$token" >"$1/vault.token"
    echo "$token"
}

# kms_vault_key PORT NAME: a Transit key NAME on the Vault test server.
kms_vault_key() {
    KMS_CTL_HEADERS="{\"X-Vault-Token\": \"$(cat "${KMS_CA%/*}/server.tokens")\"}" \
        kms_ctl "$1" POST "/v1/transit/keys/$2" '{}' >/dev/null
}

# kms_ctl PORT METHOD PATH [BODY]: a request to a test server with the
# control secret, plus the headers of the JSON object in $KMS_CTL_HEADERS;
# prints the answer.
kms_ctl() {
    python3 - "$@" <<'PY'
import json, os, ssl, sys, urllib.request
port, method, path = sys.argv[1:4]
body = sys.argv[4].encode() if len(sys.argv) > 4 else None
headers = {"X-Test-Control": open(os.environ["KMS_CTL"]).read().strip()}
headers.update(json.loads(os.environ.get("KMS_CTL_HEADERS") or "{}"))
ctx = ssl.create_default_context(cafile=os.environ["KMS_CA"])
req = urllib.request.Request("https://127.0.0.1:%s%s" % (port, path), data=body, method=method, headers=headers)
print(urllib.request.urlopen(req, context=ctx).read().decode())
PY
}

# kms_requests PORT [OP]: how many API requests the server has seen (of
# operation OP).
kms_requests() {
    kms_ctl "$1" GET /test/stats | python3 -c "import json, sys
s = json.load(sys.stdin)
print(s['by_op'].get(sys.argv[1], 0) if len(sys.argv) > 1 else s['requests'])" ${2:+"$2"}
}

# kms_fault_suite: every fault of kms_test_server.py against one provider,
# each with its SQLSTATE and nothing lost (13 checks).  The caller defines:
#   PROV             the provider's name; KMS_KEY, a kms_key it can use
#   P1, P2, P3       the main server, a second one (a redirect's target),
#                    one whose certificate names another host
#   opts T [PORT]    the provider's options as JSON, timeout_ms T, on PORT
#   q, qv            psql, quiet / with errors and SQLSTATEs
#   vt, vk           a table of 100 values (id, c) encrypted under key vk
#   decrypt_all      how many of the 100 values of table vt decrypt
#   kek_upstream     rotates the key in the KMS, so rotate_kek has work
# Each query empties the shared DEK cache first, so every unwrap goes to
# the KMS.
# Under UBSan (the suite's second pass) only vault_transit runs it: every
# fault reaches the same kms/http.c, and the pass must stay short; the
# plain pass runs it for every provider.  kms_fault_checks TYPE: how many
# checks it will run for TYPE, for the caller's plan.
kms_fault_checks() {
    if [ "${KEYSMITH_SANITIZE:-0}" = 1 ] && [ "$1" != vault_transit ]; then echo 0; else echo 13; fi
}

kms_fault_suite() { # TYPE
    local out before after n w0 w1 seen
    if [ "$(kms_fault_checks "$1")" = 0 ]; then
        echo "# kms_fault_suite: $1 skipped under UBSan (vault_transit runs it there; the plain pass runs every provider)"
        return 0
    fi
    fault() { kms_ctl "$P1" POST /test/fault "$1" >/dev/null; }
    setopts() { q -c "SELECT keysmith.alter_kms_provider('$PROV', '$(opts "$@")')" >/dev/null; }

    before=$(kms_requests "$P1")
    fault '{"mode": "429", "count": 1}'
    n=$(decrypt_all)
    after=$(kms_requests "$P1")
    [ "$n" = 100 ] && [ $((after - before)) -ge 2 ]
    ks_check $? "$PROV: 429 with Retry-After, then success: retried within the timeout ($((after - before)) requests)"

    fault '{"mode": "500", "count": -1}'
    out=$(qv -c "$KMS_FRESH" -c "SELECT count(keysmith.decrypt_value(c, id::text)) FROM vt")
    ks_sqlstate KS015 "KMS provider \"$PROV\" (127.0.0.1:*) answered HTTP 500 until its time ran out" "$out"
    ks_check $? "$PROV: 500 to the end: unavailable (KS015), after retries"
    out=$(qv -c "SELECT keysmith.create_key('k_down', '$PROV', '$KMS_KEY')")
    n=$(q -c "SELECT count(*) FROM keysmith.key WHERE name = 'k_down'")
    ks_sqlstate KS015 '*' "$out" && [ "$n" = 0 ]
    ks_check $? "$PROV: create_key while the KMS fails leaves no key behind"
    fault '{"mode": "none"}'
    kek_upstream
    fault '{"mode": "500", "count": -1}'
    w0=$(q -c "SELECT string_agg(md5(wrapped_dek) || kek_version, ',' ORDER BY version) FROM keysmith.key_version v JOIN keysmith.key k USING (key_id) WHERE k.name = 'vk'")
    out=$(qv -c "SELECT keysmith.rotate_kek('vk')")
    w1=$(q -c "SELECT string_agg(md5(wrapped_dek) || kek_version, ',' ORDER BY version) FROM keysmith.key_version v JOIN keysmith.key k USING (key_id) WHERE k.name = 'vk'")
    ks_sqlstate KS015 '*' "$out" && [ "$w0" = "$w1" ]
    ks_check $? "$PROV: rotate_kek during an outage fails and changes nothing"
    fault '{"mode": "none"}'
    out=$(qv -c "$KMS_FRESH" -c "SELECT count(keysmith.decrypt_value(c, id::text)) FROM vt")
    [[ $out != *ERROR* ]]
    ks_check $? "$PROV: once it answers again, every value decrypts"

    fault "{\"mode\": \"redirect\", \"count\": -1, \"location\": \"https://127.0.0.1:$P2\"}"
    out=$(qv -c "$KMS_FRESH" -c "SELECT count(keysmith.decrypt_value(c, id::text)) FROM vt")
    seen=$(kms_requests "$P2")
    ks_sqlstate KS017 '*answered with a redirect (HTTP 307), which keysmith never follows' "$out" && [ "$seen" = 0 ]
    ks_check $? "$PROV: a redirect is never followed: bad response (KS017), and its target saw $seen requests"

    fault '{"mode": "big", "count": -1}'
    out=$(qv -c "$KMS_FRESH" -c "SELECT count(keysmith.decrypt_value(c, id::text)) FROM vt")
    ks_sqlstate KS017 '*answered more than 262144 bytes' "$out"
    ks_check $? "$PROV: an oversized body is cut off: bad response (KS017)"

    fault '{"mode": "badjson", "count": -1}'
    out=$(qv -c "$KMS_FRESH" -c "SELECT count(keysmith.decrypt_value(c, id::text)) FROM vt")
    ks_sqlstate KS017 '*answered something that is not*JSON' "$out"
    ks_check_out $? "$out" "$PROV: malformed JSON: bad response (KS017)"

    fault '{"mode": "latency", "count": -1, "delay": 6}'
    out=$(qv -c "$KMS_FRESH" -c "SELECT count(keysmith.decrypt_value(c, id::text)) FROM vt")
    ks_sqlstate KS015 "KMS provider \"$PROV\"*" "$out"
    ks_check $? "$PROV: an answer slower than timeout_ms: unavailable (KS015)"

    setopts 60000
    fault '{"mode": "latency", "count": -1, "delay": 30}'
    out=$(PGOPTIONS='-c statement_timeout=1s' qv -c "$KMS_FRESH" -c "SELECT count(keysmith.decrypt_value(c, id::text)) FROM vt")
    ks_sqlstate 57014 'canceling statement due to statement timeout' "$out"
    ks_check $? "$PROV: a query cancel stops a hung KMS call (57014, not a 60 s wait)"
    setopts 1500
    fault '{"mode": "none"}'

    setopts 1500 "$P3"
    out=$(qv -c "$KMS_FRESH" -c "SELECT count(keysmith.decrypt_value(c, id::text)) FROM vt")
    setopts 1500
    ks_sqlstate KS015 '*TLS certificate of 127.0.0.1:*does not verify*' "$out"
    ks_check $? "$PROV: a certificate for another name is refused (KS015, says so)"

    n=$(decrypt_all)
    [ "$n" = 100 ]
    ks_check $? "$PROV: after every fault, all 100 values still decrypt"

    setopts 1500 "$(ks_free_port)"
    out=$(qv -c "$KMS_FRESH" -c "SELECT count(keysmith.decrypt_value(c, id::text)) FROM vt")
    setopts 1500
    ks_sqlstate KS015 "KMS provider \"$PROV\" (127.0.0.1:*) is unavailable*" "$out" &&
        [[ $out == *"HINT:  The KMS provider named in the message did not answer in time"* ]]
    ks_check $? "$PROV: connection refused: unavailable (KS015), with a hint"
}
