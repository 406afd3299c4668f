#!/usr/bin/env bash
# test/integration/layout.sh
#
# The layering check (test/check_layout.py, run by the test build) holds on
# the tree, and catches each kind of breach when one is planted in a copy:
# a module header under extension/ that includes rotator/, a kms/ file that
# includes a PostgreSQL header, an include cycle between two modules, a
# relative include, a header that more than a third of the files include,
# and two sources with one basename.  No server: it reads the sources.
set -uo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
. "$ROOT/test/lib.sh"
ks_plan 7

CHECK="/usr/bin/python3 $ROOT/test/check_layout.py"
out=$($CHECK "$ROOT" 2>&1)
ks_check_out $? "$out" "the tree keeps its layers: $(tail -1 <<<"$out" | sed 's/^layout: //')"

work=$(mktemp -d)
trap 'rm -rf "$work"; ks_tap_finish' EXIT
# planted NAME FILE LINE WANT: copy the tree, append LINE to FILE, expect WANT
planted() {
    local name=$1 file=$2 line=$3 want=$4 copy=$work/$1 out rc
    mkdir -p "$copy"
    cp -r "$ROOT/extension" "$ROOT/rotator" "$ROOT/kms" "$copy/"
    printf '%s\n' "$line" >>"$copy/$file"
    out=$($CHECK "$copy" 2>&1); rc=$?
    grep -qF -- "$want" <<<"$out" && [ $rc = 1 ]
    ks_check_out $? "$out" "$name is refused ($want)"
}
planted "a store that includes the engine" extension/keys/key_store.h '#include "rotator/rotation.h"' \
    'extension/keys/key_store.h includes rotator/rotation.h'
planted "a PostgreSQL header in kms/" kms/envelope.c '#include "postgres.h"' \
    'kms/ includes "postgres.h"'
planted "a cycle between two modules" extension/keys/key_store.c '#include "extension/keys/dek_cache.h"' \
    '-> extension/keys/key_store -> extension/keys/dek_cache'
planted "a relative include" extension/keys/values.c '#include "dek_cache.h"' \
    'by a relative name'

# a header every file includes
copy=$work/fanin
mkdir -p "$copy"
cp -r "$ROOT/extension" "$ROOT/rotator" "$ROOT/kms" "$copy/"
for f in "$copy"/extension/*/*.c "$copy"/rotator/*.c; do
    printf '#include "extension/common/secret_mem.h"\n' >>"$f"
done
out=$($CHECK "$copy" 2>&1); rc=$?
grep -q 'secret_mem.h is included by .* more than a third' <<<"$out" && [ $rc = 1 ]
ks_check_out $? "$out" "a header included by more than a third of the files is refused"

copy=$work/basename
mkdir -p "$copy"
cp -r "$ROOT/extension" "$ROOT/rotator" "$ROOT/kms" "$copy/"
cp "$copy/extension/keys/values.c" "$copy/rotator/values.c"
out=$($CHECK "$copy" 2>&1); rc=$?
grep -q 'share a basename' <<<"$out" && [ $rc = 1 ]
ks_check_out $? "$out" "two sources with one basename are refused"
