#!/usr/bin/env bash
# test/integration/kek_file_kept.sh
#
# Issue 22, part 2: a backend keeps the parsed local master key file
# between unwraps (kms/local.c) and must notice every change to the file.
# One backend, on its own cluster, decrypts a value after each change and a
# flush of its DEK cache (so each decrypt unwraps again through the file):
# a file made group-readable (chmod) is refused, a file replaced by rename
# with another key fails to unwrap, a file rewritten in place at the same
# size with its modification time set back (only the change time tells)
# fails to unwrap, a deleted file is reported missing, and the right file
# decrypts again after each.  Each change is made after the file's times are
# older than the 2 s a kept set needs (kms/local.c), so the backend holds a
# kept set when it happens; a kept set that skipped its stat comparison
# would decrypt each time (checked by hand with the comparison disabled).
set -uo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
. "$ROOT/test/lib.sh"
ks_plan 9

dir=$KS_WORK/extra-kekkept
cleanup() { ks_cluster_stop "$dir" immediate >/dev/null 2>&1; }
ks_cluster_init "$dir"
ks_cluster_start "$dir"
. "$dir/env"
key=$dir/data/keysmith_master.key

q -c "CREATE EXTENSION keysmith" -c "SELECT keysmith.create_key('kept')" \
  -c "CREATE TABLE v AS SELECT keysmith.encrypt_value('kept', 'kept safe') AS c" >/dev/null
ks_check $? "setup: a key and a value under the local provider"
cp -p "$key" "$dir/right.key"
hex=$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')   # ks_new_master_key's layout, so the same size
printf '# keysmith local master keys: <version>:<64 hex>\n1:%s\n' "$hex" >"$dir/other.key"
chown "$PG_OSUSER" "$dir/other.key" && chmod 0600 "$dir/other.key"
[ -s "$key" ] && [ "$(stat -c %s "$key")" = "$(stat -c %s "$dir/other.key")" ] && ! cmp -s "$key" "$dir/other.key"
ks_check $? "another master key file of the same size as the right one"
sleep 3                                       # the file's times are now old enough to keep

# put FILE at the key's path by rename, as postgres, mode 0600
# (a shell command for psql's \!)
put() { echo "runuser -u $PG_OSUSER -- sh -c \"cp '$1' '$key.new' && chmod 0600 '$key.new' && mv '$key.new' '$key'\""; }
flush="DO \$\$ BEGIN PERFORM keysmith.flush_dek_cache(); END \$\$;"
out=$(qv <<SQL
\\echo step-kept
SELECT keysmith.decrypt_value(c) FROM v;
\\! chmod 0640 '$key'
$flush
\\echo step-chmod
SELECT keysmith.decrypt_value(c) FROM v;
\\! chmod 0600 '$key'
\\! sleep 3
$flush
\\echo step-back
SELECT keysmith.decrypt_value(c) FROM v;
\\! $(put "$dir/other.key")
$flush
\\echo step-renamed
SELECT keysmith.decrypt_value(c) FROM v;
\\! $(put "$dir/right.key") && sleep 3
$flush
\\echo step-back2
SELECT keysmith.decrypt_value(c) FROM v;
\\! touch -r '$key' '$dir/ref' && cat '$dir/other.key' > '$key' && touch -r '$dir/ref' '$key'
$flush
\\echo step-inplace
SELECT keysmith.decrypt_value(c) FROM v;
\\! rm -f '$key'
$flush
\\echo step-deleted
SELECT keysmith.decrypt_value(c) FROM v;
\\! $(put "$dir/right.key")
$flush
\\echo step-end
SELECT keysmith.decrypt_value(c) FROM v;
SQL
)
# step NAME: the output between "step-NAME" and the next step
step() { printf '%s\n' "$out" | awk -v s="step-$1" '$0 == s { on = 1; next } /^step-/ { on = 0 } on'; }

[ "$(step kept)" = "kept safe" ]
ks_check_out $? "$(step kept)" "the right file decrypts, and its set is kept"
ks_sqlstate KS006 "master key file \"keysmith_master.key\" has mode 0640;*" "$(step chmod)"
ks_check_out $? "$(step chmod)" "chmod 0640 under a kept set: the file is refused (KS006)"
[ "$(step back)" = "kept safe" ] && [ "$(step back2)" = "kept safe" ]
ks_check_out $? "$(step back; step back2)" "mode 0600 again, and the right file put back: decrypts again"
ks_sqlstate KS008 "wrapped data key does not authenticate under master key version 1*" "$(step renamed)"
ks_check_out $? "$(step renamed)" "a file replaced by rename with another key: the kept set is not used (KS008)"
ks_sqlstate KS008 "wrapped data key does not authenticate under master key version 1*" "$(step inplace)"
ks_check_out $? "$(step inplace)" "rewritten in place, same size, modification time set back: noticed by its change time (KS008)"
ks_sqlstate 58P01 "master key file \"keysmith_master.key\" does not exist*" "$(step deleted)"
ks_check_out $? "$(step deleted)" "a deleted file is reported missing (58P01)"
[ "$(step end)" = "kept safe" ]
ks_check_out $? "$(step end)" "the right file back: decrypts"
