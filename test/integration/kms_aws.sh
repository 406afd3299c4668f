#!/usr/bin/env bash
# test/integration/kms_aws.sh
#
# The aws_kms provider against test/kms/aws_server.py, a test server that
# imitates AWS KMS's JSON API over HTTPS (no AWS service can be reached
# here; the server's header says so) and VERIFIES every request's SigV4
# signature with python3-botocore.  Keys wrap and unwrap with their
# EncryptionContext; a wrapped DEK moved to another key does not unwrap;
# automatic rotation needs no rewrap, an alias repointed at a new key does,
# by ReEncrypt (the DEK never leaves KMS); credentials come from a shared
# credentials file (profiles, session tokens, rotation on disk); a bad
# secret, an unknown key id, a wrong session token and an IAM denial are
# KS016; throttling is retried; then kms_fault_suite (test/kms/lib.sh).
set -uo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
. "$ROOT/test/lib.sh"
. "$ROOT/test/kms/lib.sh"
ks_plan $((21 + $(kms_fault_checks aws_kms)))

A=$KS_WORK/aws
rm -rf "$A"; mkdir -p "$A"
pids=()

kms_ca "$A"
rnd() { od -An -tx1 -N"$1" /dev/urandom | tr -d ' \n'; }
akid=AKIA$(rnd 8 | tr a-f A-F); secret=$(rnd 20); tid=ASIA$(rnd 8 | tr a-f A-F); tsecret=$(rnd 20); ttoken=$(rnd 32)
creds() { # the credentials file, for keysmith and for the server alike
    printf '# shared credentials\n[default]\naws_access_key_id = %s\naws_secret_access_key = %s\n\n[temp]\naws_access_key_id=%s\naws_secret_access_key=%s\naws_session_token=%s\n' \
        "$akid" "$secret" "$tid" "$tsecret" "$ttoken"
}
creds >"$A/server.credentials"
install -m 600 -o "$PG_OSUSER" /dev/null "$A/credentials"
creds >"$A/credentials"

start_server() { # PORT CERT
    kms_start "$A/server.log" aws_server.py "$1" "$2" --credentials "$A/server.credentials" --region eu-west-1
}
P1=$(ks_free_port); start_server "$P1" good
P2=$(ks_free_port); start_server "$P2" good
P3=$(ks_free_port); start_server "$P3" wrong
arn1=$(kms_ctl "$P1" POST /test/keys '{"alias": "app"}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["Arn"])')
kms_ctl "$P1" POST /test/keys '{"alias": "other"}' >/dev/null

dir=$KS_WORK/extra-kms-aws
ks_cluster_init "$dir"
ks_cluster_start "$dir"
. "$dir/env"
opts() { # TIMEOUT_MS [PORT] [PROFILE]
    printf '{"region": "eu-west-1", "endpoint": "https://127.0.0.1:%s", "credentials_file": "%s", "profile": "%s", "ca_file": "%s", "timeout_ms": "%s"}' \
        "${2:-$P1}" "$A/credentials" "${3:-default}" "$A/ca-for-keysmith.pem" "$1"
}
setopts() { q -c "SELECT keysmith.alter_kms_provider('aws1', '$(opts "$@")')" >/dev/null; }
decrypt_all() { q -c "$KMS_FRESH" -c "SELECT count(*) FROM vt WHERE keysmith.decrypt_value(c, id::text) = 'v' || id"; }
wrapped() { q -c "SELECT string_agg(md5(wrapped_dek) || kek_version, ',' ORDER BY version) FROM keysmith.key_version v JOIN keysmith.key k USING (key_id) WHERE k.name = '$1'"; }

q -c "CREATE EXTENSION keysmith" -c "SELECT keysmith.create_kms_provider('aws1', 'aws_kms', '$(opts 1500)')" >/dev/null
ks_check $? "three test servers verifying SigV4 with botocore; an aws_kms provider with an endpoint, a credentials file, a profile, a CA file"

out=$(qv -c "SELECT keysmith.create_key('vk0', 'aws1')")
ks_sqlstate 22023 'a key of KMS type aws_kms needs kms_key*' "$out"
ks_check $? "a key under aws_kms needs kms_key (22023)"
q -c "SELECT keysmith.create_key('vk', 'aws1', 'alias/app')" \
  -c "CREATE TABLE vt AS SELECT i AS id, keysmith.encrypt_value('vk', 'v' || i, i::text) AS c FROM generate_series(1, 100) i" >/dev/null
kv=$(q -c "SELECT kek_version FROM keysmith.key_versions WHERE key_name = 'vk'")
[ "$kv" = "$arn1" ] && [ "$(decrypt_all)" = 100 ]
ks_check $? "a key wraps its DEK through AWS KMS (signed by libcurl, verified by botocore); 100 values round-trip"
[ "$kv" = "$arn1" ]
ks_check $? "its KEK version is the key ARN Encrypt answered ($kv)"
n=$(kms_requests "$P1" Encrypt)
[ "$n" = 1 ]
ks_check $? "one Encrypt for the key's DEK ($n)"

q -c "SELECT keysmith.create_key('vk2', 'aws1', 'alias/app')" -c "SELECT keysmith.encrypt_value('vk2', 'x')" >/dev/null
orig=$(q -c "SELECT encode(wrapped_dek, 'hex') FROM keysmith.key_version WHERE key_id = (SELECT key_id FROM keysmith.key WHERE name = 'vk')")
q -c "UPDATE keysmith.key_version SET wrapped_dek = (SELECT wrapped_dek FROM keysmith.key_version v JOIN keysmith.key k USING (key_id) WHERE k.name = 'vk2') WHERE key_id = (SELECT key_id FROM keysmith.key WHERE name = 'vk')" >/dev/null
out=$(qv -c "$KMS_FRESH" -c "SELECT keysmith.decrypt_value(c, id::text) FROM vt WHERE id = 1")
ks_sqlstate KS008 '*does not authenticate (InvalidCiphertextException)*' "$out"
ks_check_out $? "$out" "attack: vk2's wrapped DEK copied into vk does not unwrap: the EncryptionContext names key and version (KS008)"
q -c "UPDATE keysmith.key_version SET wrapped_dek = decode('$orig', 'hex') WHERE key_id = (SELECT key_id FROM keysmith.key WHERE name = 'vk')" >/dev/null


kms_ctl "$P1" POST /test/rotate '{"alias": "app"}' >/dev/null
n=$(q -c "SELECT keysmith.rotate_kek('vk')")
[ "$n" = 0 ] && [ "$(decrypt_all)" = 100 ]
ks_check $? "AWS's automatic rotation (new backing material) needs no rewrap: rotate_kek does nothing, and old blobs still decrypt"

arn2=$(kms_ctl "$P1" POST /test/keys '{"alias": "app"}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["Arn"])')
d0=$(kms_requests "$P1" Decrypt); r0=$(kms_requests "$P1" ReEncrypt)
n1=$(q -c "SELECT keysmith.rotate_kek('vk')")
d1=$(kms_requests "$P1" Decrypt); r1=$(kms_requests "$P1" ReEncrypt)
kv=$(q -c "SELECT kek_version FROM keysmith.key_versions WHERE key_name = 'vk'")
[ "$n1" = 1 ] && [ "$kv" = "$arn2" ] && [ $((r1 - r0)) = 1 ] && [ "$d1" = "$d0" ]
ks_check $? "the alias repointed at a new key (AWS's manual rotation): rotate_kek re-wraps by one ReEncrypt, no Decrypt: the DEK never leaves KMS"
n2=$(q -c "SELECT keysmith.rotate_kek('vk')")
[ "$n2" = 0 ] && [ "$(decrypt_all)" = 100 ]
ks_check $? "then rotate_kek has nothing to do, and all 100 values decrypt"

setopts 1500 "$P1" temp
n=$(decrypt_all)
[ "$n" = 100 ]
ks_check $? "temporary credentials: profile temp with aws_session_token, sent as X-Amz-Security-Token and signed"
sed -i "s/^aws_session_token=.*/aws_session_token=$(rnd 32)/" "$A/credentials"
out=$(qv -c "$KMS_FRESH" -c "SELECT count(keysmith.decrypt_value(c, id::text)) FROM vt")
creds >"$A/credentials"
ks_sqlstate KS016 'KMS provider "aws1" denied the request (HTTP 400, UnrecognizedClientException)*' "$out"
ks_check_out $? "$out" "a session token AWS does not know: denied (KS016)"
setopts 1500

akid=AKIA$(rnd 8 | tr a-f A-F); secret=$(rnd 20)
creds >"$A/server.credentials"; creds >"$A/credentials"
n=$(decrypt_all)
[ "$n" = 100 ]
ks_check $? "credentials rotated on disk: the next call reads the new ones"
sed -i "s/^aws_secret_access_key = .*/aws_secret_access_key = $(rnd 20)/" "$A/credentials"
out=$(qv -c "$KMS_FRESH" -c "SELECT count(keysmith.decrypt_value(c, id::text)) FROM vt")
creds >"$A/credentials"
ks_sqlstate KS016 '*denied the request (HTTP 400, InvalidSignatureException): The request signature we calculated does not match*' "$out"
ks_check_out $? "$out" "a wrong secret key: botocore finds the signature wrong, denied (KS016)"
sed -i "s/^aws_access_key_id = .*/aws_access_key_id = AKIAUNKNOWN/" "$A/credentials"
out=$(qv -c "$KMS_FRESH" -c "SELECT count(keysmith.decrypt_value(c, id::text)) FROM vt")
creds >"$A/credentials"
ks_sqlstate KS016 '*denied the request (HTTP 400, UnrecognizedClientException)*' "$out"
ks_check_out $? "$out" "an access key id AWS does not know: denied (KS016)"
setopts 1500 "$P1" nope
out=$(qv -c "$KMS_FRESH" -c "SELECT count(keysmith.decrypt_value(c, id::text)) FROM vt")
setopts 1500
ks_sqlstate KS016 "KMS provider \"aws1\": profile \"nope\" of credentials_file \"$A/credentials\" has no aws_access_key_id and aws_secret_access_key" "$out"
ks_check_out $? "$out" "a profile the credentials file lacks: denied (KS016), naming the file and profile"

kms_ctl "$P1" POST /test/deny '{"actions": ["Decrypt"]}' >/dev/null
out=$(qv -c "$KMS_FRESH" -c "SELECT count(keysmith.decrypt_value(c, id::text)) FROM vt")
kms_ctl "$P1" POST /test/deny '{"actions": []}' >/dev/null
ks_sqlstate KS016 '*denied the request (HTTP 400, AccessDeniedException): User is not authorized to perform: kms:Decrypt' "$out"
ks_check_out $? "$out" "a key policy that denies kms:Decrypt: denied (KS016)"

before=$(kms_requests "$P1")
kms_ctl "$P1" POST /test/fault '{"mode": "throttle", "count": 2}' >/dev/null
n=$(decrypt_all)
after=$(kms_requests "$P1")
[ "$n" = 100 ] && [ $((after - before)) -ge 3 ]
ks_check $? "KMS throttling (HTTP 400 ThrottlingException) is retried like a 429 ($((after - before)) requests)"

PROV=aws1 KMS_KEY=alias/app
kek_upstream() { kms_ctl "$P1" POST /test/keys '{"alias": "app"}' >/dev/null; }
kms_fault_suite aws_kms

# The mistake of issue 23: the provider pointed at another AWS account
# whose alias of the same name names another key.  Decrypt there is told
# the key (KeyId) and refuses the other account's ciphertext, so no write
# may go through: a new key behind the alias, a new DEK version, a value.
kms_ctl "$P2" POST /test/keys '{"alias": "app"}' >/dev/null
nv=$(q -c "SELECT count(*) FROM keysmith.key_version")
out=$(qv -c "SELECT keysmith.alter_kms_provider('aws1', '$(opts 1500 "$P2")')" -c "$KMS_FRESH" \
         -c "SELECT keysmith.create_key('vk-other', 'aws1', 'alias/app')" -c "$KMS_FRESH" \
         -c "SELECT keysmith.rotate_dek('vk')")
nv2=$(q -c "SELECT count(*) FROM keysmith.key_version")
nk=$(q -c "SELECT count(*) FROM keysmith.key WHERE name = 'vk-other'")
setopts 1500
ks_sqlstate KS019 'KMS provider "aws1" holds other key material than the one this database*' "$out" &&
    [[ $out == *'key "vk" gets no new version'* ]] && [ "$nv" = "$nv2" ] && [ "$nk" = 0 ] && [ "$(decrypt_all)" = 100 ]
ks_check_out $? "$out" "attack: another account's key behind the same alias: create_key refused (KS019), rotate_dek makes no version, nothing written; back on the right account every value decrypts"

out=$(qv -c "SELECT keysmith.create_kms_provider('aws2', 'aws_kms', '{\"endpoint\": \"https://127.0.0.1:$P1\"}')")
ks_sqlstate 22023 'aws_kms needs option region*' "$out" || st=1
out=$(qv -c "SELECT keysmith.create_kms_provider('aws2', 'aws_kms', '{\"region\": \"eu-west-1\", \"endpoint\": \"http://127.0.0.1:$P1\"}')")
ks_sqlstate 22023 'aws_kms needs option endpoint, an https:// URL' "$out"
ks_check_out $? "$out" "a provider without a region, or with a plain-http endpoint, is refused (22023)"
out=$(qv -c "SELECT keysmith.create_kms_provider('aws2', 'aws_kms', '{\"region\": \"eu-west-1\", \"aws_secret_access_key\": \"$secret\"}')")
ks_sqlstate 22023 'unknown option "aws_secret_access_key" for KMS type aws_kms' "$out" && [[ $out != *"$secret"* ]]
ks_check_out $? "$out" "a secret key in the options is refused, and not echoed: options hold references only (22023)"

n=$(cat "$dir"/*.log "$dir/server.log" 2>/dev/null | grep -c -F -e "$secret" -e "$tsecret" -e "$ttoken")
[ "$n" = 0 ]
ks_check $? "no secret key or session token in the server log ($n)"
ks_cluster_stop "$dir"
