#!/usr/bin/env bash
# test/integration/kms_migrate.sh
#
# migrate_key moves a key local -> Vault -> AWS -> local, against the test
# servers of test/kms/ (they imitate Vault Transit and AWS KMS over HTTPS;
# their headers say so).  Every DEK version moves (a destroyed one stays
# destroyed), no encrypted value is touched, and every value decrypts after
# each move, even once the provider the key left is gone.  An outage in the
# middle of a move (the KMS answers the first version, then fails) leaves
# the key whole where it was.
set -uo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
. "$ROOT/test/lib.sh"
. "$ROOT/test/kms/lib.sh"
ks_plan 10

M=$KS_WORK/kms-migrate
rm -rf "$M"; mkdir -p "$M"
pids=()
kms_ca "$M"
rnd() { od -An -tx1 -N"$1" /dev/urandom | tr -d ' \n'; }
kms_vault_tokens "$M" >/dev/null
printf '[default]\naws_access_key_id = AKIA%s\naws_secret_access_key = %s\n' "$(rnd 8)" "$(rnd 20)" >"$M/server.credentials"
install -m 600 -o "$PG_OSUSER" "$M/server.credentials" "$M/aws.credentials"
PV=$(ks_free_port)
kms_start "$M/server.log" vault_server.py "$PV" good --tokens "$M/server.tokens"
PA=$(ks_free_port)
kms_start "$M/server.log" aws_server.py "$PA" good --credentials "$M/server.credentials" --region eu-west-1
vault_pid=${pids[0]}
kms_vault_key "$PV" app
kms_ctl "$PA" POST /test/keys '{"alias": "app"}' >/dev/null

dir=$KS_WORK/extra-kms-migrate
ks_cluster_init "$dir"
ks_cluster_start "$dir"
. "$dir/env"
decrypt_all() { q -c "$KMS_FRESH" -c "SELECT count(*) FROM mt WHERE keysmith.decrypt_value(c, id::text) = 'v' || id"; }
versions() { q -c "SELECT string_agg(version || ':' || state || ':' || coalesce(kek_version, '-'), ' ' ORDER BY version) FROM keysmith.key_versions WHERE key_name = 'mk'"; }
wrapped() { q -c "SELECT string_agg(coalesce(md5(wrapped_dek), '-'), ',' ORDER BY version) FROM keysmith.key_version WHERE key_id = (SELECT key_id FROM keysmith.key WHERE name = 'mk')"; }

q -c "CREATE EXTENSION keysmith" \
  -c "SELECT keysmith.create_kms_provider('vault1', 'vault_transit', '{\"url\": \"https://127.0.0.1:$PV\", \"token_file\": \"$M/vault.token\", \"ca_file\": \"$M/ca-for-keysmith.pem\", \"timeout_ms\": \"1500\"}')" \
  -c "SELECT keysmith.create_kms_provider('aws1', 'aws_kms', '{\"region\": \"eu-west-1\", \"endpoint\": \"https://127.0.0.1:$PA\", \"credentials_file\": \"$M/aws.credentials\", \"ca_file\": \"$M/ca-for-keysmith.pem\", \"timeout_ms\": \"1500\"}')" \
  -c "SELECT keysmith.create_key('mk')" \
  -c "CREATE TABLE mt (id int, c bytea)" \
  -c "INSERT INTO mt SELECT i, keysmith.encrypt_value('mk', 'v' || i, i::text) FROM generate_series(1, 100) i" \
  -c "SELECT keysmith.rotate_dek('mk')" \
  -c "INSERT INTO mt SELECT i, keysmith.encrypt_value('mk', 'v' || i, i::text) FROM generate_series(101, 200) i" \
  -c "SELECT keysmith.rotate_dek('mk')" \
  -c "INSERT INTO mt SELECT i, keysmith.encrypt_value('mk', 'v' || i, i::text) FROM generate_series(201, 300) i" \
  -c "SELECT keysmith.create_key('gone')" -c "SELECT keysmith.rotate_dek('gone')" \
  -c "SELECT keysmith.destroy_key_version('gone', 1)" >/dev/null
rows0=$(q -c "SELECT md5(string_agg(c::text, ',' ORDER BY id)) FROM mt")
[ "$(decrypt_all)" = 300 ]
ks_check $? "a local key with three DEK versions, 100 values under each"

n=$(q -c "SELECT keysmith.migrate_key('mk', 'vault1', 'app')")
v=$(versions)
[ "$n" = 3 ] && [ "$v" = "1:active:1 2:active:1 3:active:1" ] && [ "$(decrypt_all)" = 300 ]
ks_check $? "local -> Vault: $n versions re-wrapped by Transit ($v); all 300 values decrypt"

n=$(q -c "SELECT keysmith.migrate_key('mk', 'aws1', 'alias/app')")
v=$(versions)
[ "$n" = 3 ] && [[ $v == "1:active:arn:aws:kms:eu-west-1:"*" 3:active:arn:aws:kms:"* ]]
ks_check_out $? "$v" "Vault -> AWS: $n versions re-wrapped by KMS under the key's ARN"
kill "$vault_pid"; wait "$vault_pid" 2>/dev/null
[ "$(decrypt_all)" = 300 ]
ks_check $? "with Vault gone, all 300 values decrypt through AWS"

w0=$(wrapped)
kms_ctl "$PA" POST /test/fault '{"mode": "500", "count": -1, "after": 1}' >/dev/null
out=$(qv -c "SELECT keysmith.migrate_key('mk', 'local')")
kms_ctl "$PA" POST /test/fault '{"mode": "none"}' >/dev/null
w1=$(wrapped); kms=$(q -c "SELECT kms FROM keysmith.keys WHERE name = 'mk'")
ks_sqlstate KS015 'KMS provider "aws1"*' "$out" && [ "$w0" = "$w1" ] && [ "$kms" = aws1 ]
ks_check_out $? "$out" "AWS fails after unwrapping the first version: migrate_key fails (KS015) and the key stays whole on aws1"
[ "$(decrypt_all)" = 300 ]
ks_check $? "and every value still decrypts there"

n=$(q -c "SELECT keysmith.migrate_key('mk', 'local')")
v=$(versions)
[ "$n" = 3 ] && [ "$v" = "1:active:1 2:active:1 3:active:1" ] && [ "$(decrypt_all)" = 300 ]
ks_check $? "AWS -> local: $n versions back under the master key file ($v); all values decrypt"

rows1=$(q -c "SELECT md5(string_agg(c::text, ',' ORDER BY id)) FROM mt")
[ "$rows0" = "$rows1" ]
ks_check $? "no encrypted value was touched by three moves"

n=$(q -c "SELECT keysmith.migrate_key('gone', 'aws1', 'alias/app')")
v=$(q -c "SELECT string_agg(version || ':' || state, ' ' ORDER BY version) FROM keysmith.key_versions WHERE key_name = 'gone'")
[ "$n" = 1 ] && [ "$v" = "1:destroyed 2:active" ]
ks_check_out $? "$n $v" "a destroyed version has nothing to move and stays destroyed ($v)"

e=$(q -c "SELECT string_agg(detail, ' | ' ORDER BY event_id) FROM keysmith.key_event WHERE key_name = 'mk' AND event = 'migrate'")
[[ $e == "3 version(s) moved from local to vault1 app | 3 version(s) moved from vault1 app to aws1 alias/app | 3 version(s) moved from aws1 alias/app to local" ]]
ks_check_out $? "$e" "each move is audited in key_event, the failed one not"
ks_cluster_stop "$dir"
