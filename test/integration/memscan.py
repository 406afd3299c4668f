#!/usr/bin/python3
# test/integration/memscan.py PID REGEX
#
# Counts the matches of a byte regex (Python syntax) in the private
# writable memory of process PID (its heap, anonymous mappings and stack;
# not shared memory, not files, not mappings over 2 GB such as ASan's
# shadow), read through /proc/PID/mem.  The secret
# memory test (secret_wipe.sh) uses it to look for plaintext that a
# backend left behind.  Prints the count; exits 2 when the memory cannot be
# read (no CAP_SYS_PTRACE, for example in a container), so the caller can
# tell "none found" from "could not look".
import re
import sys


def main():
    pid, pattern = sys.argv[1], re.compile(sys.argv[2].encode())
    count = 0
    readable = 0
    try:
        maps = open(f"/proc/{pid}/maps").read().splitlines()
        mem = open(f"/proc/{pid}/mem", "rb", buffering=0)
    except OSError as e:
        print(f"cannot read process {pid}: {e}", file=sys.stderr)
        sys.exit(2)
    for line in maps:
        fields = line.split()
        perms = fields[1]
        name = fields[5] if len(fields) > 5 else ""
        # private and writable; anonymous, the heap or the stack
        if perms[0] != "r" or perms[1] != "w" or perms[3] != "p":
            continue
        if name and name not in ("[heap]", "[stack]"):
            continue
        start, end = (int(x, 16) for x in fields[0].split("-"))
        # ASan's shadow memory: terabytes reserved, never data
        if end - start > (2 << 30):
            continue
        try:
            mem.seek(start)
            data = mem.read(end - start)
        except (OSError, ValueError, OverflowError):
            continue
        readable += 1
        count += len(pattern.findall(data))
    if readable == 0:
        print(f"no memory of process {pid} was readable", file=sys.stderr)
        sys.exit(2)
    print(count)


main()
