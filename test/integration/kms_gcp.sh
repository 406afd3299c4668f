#!/usr/bin/env bash
# test/integration/kms_gcp.sh
#
# The gcp_kms provider against test/kms/gcp_server.py, a test server that
# imitates Google Cloud KMS and Google's token endpoint over HTTPS (no
# Google service can be reached here; the server's header says so).
# keysmith signs the JWT bearer grant with the service account's key
# (RS256, OpenSSL), and the server verifies it with the public key; a JWT
# signed by another key is refused (KS016).  Keys encrypt with their
# binding as additionalAuthenticatedData (a wrapped DEK moved to another
# key does not decrypt); a new primary version is a KEK rotation; IAM denial
# is KS016; then kms_fault_suite (test/kms/lib.sh).
set -uo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
. "$ROOT/test/lib.sh"
. "$ROOT/test/kms/lib.sh"
ks_plan $((12 + $(kms_fault_checks gcp_kms)))

G=$KS_WORK/gcp
rm -rf "$G"; mkdir -p "$G"
pids=()
kms_ca "$G"
P1=$(ks_free_port); P2=$(ks_free_port); P3=$(ks_free_port)
account() { # KEYFILE OUT: a service account key file as Google issues them
    python3 - "$1" "$2" "$P1" <<'PY'
import json, sys
key, out, port = sys.argv[1:4]
json.dump({"type": "service_account", "project_id": "keysmith-test", "private_key_id": "k1",
           "private_key": open(key).read(), "client_email": "keysmith@keysmith-test.iam.gserviceaccount.com",
           "token_uri": "https://127.0.0.1:%s/token" % port}, open(out, "w"))
PY
}
openssl genrsa -out "$G/sa.pem" 2048 2>/dev/null && openssl genrsa -out "$G/other.pem" 2048 2>/dev/null
account "$G/sa.pem" "$G/server.account"
install -m 600 -o "$PG_OSUSER" /dev/null "$G/sa.json"; cat "$G/server.account" >"$G/sa.json"
start_server() { kms_start "$G/server.log" gcp_server.py "$1" "$2" --account "$G/server.account"; }
start_server "$P1" good; start_server "$P2" good; start_server "$P3" wrong
KEY=projects/keysmith-test/locations/global/keyRings/ring/cryptoKeys/app
kms_ctl "$P1" POST /test/keys "{\"name\": \"$KEY\"}" >/dev/null

dir=$KS_WORK/extra-kms-gcp
ks_cluster_init "$dir"
ks_cluster_start "$dir"
. "$dir/env"
opts() { # TIMEOUT_MS [PORT]
    printf '{"credentials_file": "%s", "endpoint": "https://127.0.0.1:%s", "token_url": "https://127.0.0.1:%s/token", "ca_file": "%s", "timeout_ms": "%s"}' \
        "$G/sa.json" "${2:-$P1}" "${2:-$P1}" "$G/ca-for-keysmith.pem" "$1"
}
decrypt_all() { q -c "$KMS_FRESH" -c "SELECT count(*) FROM vt WHERE keysmith.decrypt_value(c, id::text) = 'v' || id"; }

q -c "CREATE EXTENSION keysmith" -c "SELECT keysmith.create_kms_provider('gcp1', 'gcp_kms', '$(opts 1500)')" >/dev/null
ks_check $? "three test servers; a gcp_kms provider with a service account key file, an endpoint, a token URL and a CA file"

out=$(qv -c "SELECT keysmith.create_key('vk0', 'gcp1', 'projects/p/cryptoKeys/k')")
ks_sqlstate 22023 'a key of KMS type gcp_kms needs kms_key, projects/<p>/locations/<l>/keyRings/<r>/cryptoKeys/<k>' "$out"
ks_check_out $? "$out" "a kms_key that is not a full cryptoKey name is refused (22023)"
q -c "SELECT keysmith.create_key('vk', 'gcp1', '$KEY')" \
  -c "CREATE TABLE vt AS SELECT i AS id, keysmith.encrypt_value('vk', 'v' || i, i::text) AS c FROM generate_series(1, 100) i" >/dev/null
kv=$(q -c "SELECT kek_version FROM keysmith.key_versions WHERE key_name = 'vk'")
[ "$kv" = 1 ] && [ "$(decrypt_all)" = 100 ]
ks_check $? "a key wraps its DEK with Cloud KMS encrypt (KEK version: primary version $kv); 100 values round-trip"
n=$(kms_requests "$P1" token)
[ "$n" = 2 ]
ks_check $? "each backend signed one JWT grant, verified by the server with the service account's public key ($n token requests)"

q -c "SELECT keysmith.create_key('vk2', 'gcp1', '$KEY')" -c "SELECT keysmith.encrypt_value('vk2', 'x')" >/dev/null
orig=$(q -c "SELECT encode(wrapped_dek, 'hex') FROM keysmith.key_version WHERE key_id = (SELECT key_id FROM keysmith.key WHERE name = 'vk')")
q -c "UPDATE keysmith.key_version SET wrapped_dek = (SELECT wrapped_dek FROM keysmith.key_version v JOIN keysmith.key k USING (key_id) WHERE k.name = 'vk2') WHERE key_id = (SELECT key_id FROM keysmith.key WHERE name = 'vk')" >/dev/null
out=$(qv -c "$KMS_FRESH" -c "SELECT keysmith.decrypt_value(c, id::text) FROM vt WHERE id = 1")
q -c "UPDATE keysmith.key_version SET wrapped_dek = decode('$orig', 'hex') WHERE key_id = (SELECT key_id FROM keysmith.key WHERE name = 'vk')" >/dev/null
ks_sqlstate KS008 'KMS provider "gcp1": the wrapped data key does not authenticate (INVALID_ARGUMENT)' "$out"
ks_check_out $? "$out" "attack: vk2's wrapped DEK copied into vk fails Cloud KMS's AAD check (KS008)"

kms_ctl "$P1" POST /test/keys "{\"name\": \"$KEY\"}" >/dev/null
n1=$(q -c "SELECT keysmith.rotate_kek('vk')"); n2=$(q -c "SELECT keysmith.rotate_kek('vk')")
kv=$(q -c "SELECT kek_version FROM keysmith.key_versions WHERE key_name = 'vk'")
[ "$n1" = 1 ] && [ "$n2" = 0 ] && [ "$kv" = 2 ] && [ "$(decrypt_all)" = 100 ]
ks_check $? "a new primary version: rotate_kek decrypts and encrypts once (Cloud KMS has no rewrap), then has nothing to do"

account "$G/other.pem" "$G/sa.json"
out=$(qv -c "$KMS_FRESH" -c "SELECT count(keysmith.decrypt_value(c, id::text)) FROM vt")
cat "$G/server.account" >"$G/sa.json"
ks_sqlstate KS016 'KMS provider "gcp1": the token endpoint refused the credentials (HTTP 400, invalid_grant)' "$out"
ks_check_out $? "$out" "a JWT signed by a key that is not the service account's: refused (KS016)"
echo '{"type": "service_account"}' >"$G/sa.json"
out=$(qv -c "$KMS_FRESH" -c "SELECT count(keysmith.decrypt_value(c, id::text)) FROM vt")
cat "$G/server.account" >"$G/sa.json"
ks_sqlstate KS016 "KMS provider \"gcp1\": credentials_file \"$G/sa.json\" is no service account key*" "$out"
ks_check_out $? "$out" "a credentials file that is no service account key: denied (KS016), naming the file"

kms_ctl "$P1" POST /test/deny '{"ops": ["decrypt"]}' >/dev/null
out=$(qv -c "$KMS_FRESH" -c "SELECT count(keysmith.decrypt_value(c, id::text)) FROM vt")
kms_ctl "$P1" POST /test/deny '{"ops": []}' >/dev/null
ks_sqlstate KS016 'KMS provider "gcp1" denied the request (HTTP 403, PERMISSION_DENIED)*' "$out"
ks_check_out $? "$out" "IAM without cloudkms.cryptoKeyVersions.useToDecrypt: denied (KS016)"

PROV=gcp1 KMS_KEY=$KEY
kek_upstream() { kms_ctl "$P1" POST /test/keys "{\"name\": \"$KEY\"}" >/dev/null; }
kms_fault_suite gcp_kms

out=$(qv -c "SELECT keysmith.create_kms_provider('gcp2', 'gcp_kms', '{\"endpoint\": \"https://127.0.0.1:$P1\"}')")
ks_sqlstate 22023 'gcp_kms needs option credentials_file*' "$out"
ks_check_out $? "$out" "a provider without a credentials file is refused (22023)"
out=$(qv -c "SELECT keysmith.create_kms_provider('gcp2', 'gcp_kms', '{\"credentials_file\": \"/x\", \"private_key\": \"-----BEGIN PRIVATE KEY-----\"}')")
ks_sqlstate 22023 'unknown option "private_key" for KMS type gcp_kms' "$out"
ks_check_out $? "$out" "a private key in the options is refused (22023)"

key_line=$(sed -n 2p "$G/sa.pem")
n=$(grep -c -F -e "$key_line" "$dir/server.log")
[ "$n" = 0 ]
ks_check $? "no private key material in the server log ($n)"
ks_cluster_stop "$dir"
