#!/usr/bin/python3
"""test/integration/crosscheck.py

Checks keysmith against docs/format.md with an independent implementation
(Debian's python3-cryptography): unwraps the stored DEKs with the local
master key file exactly as the spec describes, decrypts ciphertexts that
the server produced, and produces ciphertexts the server must decrypt.
Usage: crosscheck.py MASTER_KEY_FILE (PG* variables select the server).
"""
import os
import struct
import subprocess
import sys

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

n = 0
PLANNED = 5
failed = 0


def check(cond, what):
    global n, failed
    n += 1
    if cond:
        print(f"ok {n} - {what}")
    else:
        failed += 1
        print(f"not ok {n} - {what}")


def psql(sql, db="ks_cross"):
    out = subprocess.run(["psql", "-X", "-q", "-t", "-A", "-F", "|", "-v", "ON_ERROR_STOP=1",
                          "-d", db, "-c", sql], check=True, capture_output=True, text=True)
    return [line.split("|") for line in out.stdout.splitlines() if line]


def master_keys(path):
    keys = {}
    for line in open(path):
        line = line.strip()
        if line and not line.startswith("#"):
            v, h = line.split(":")
            keys[int(v)] = bytes.fromhex(h)
    return keys


def unwrap(blob, kek, name, version):
    assert blob[0] == 1 and len(blob) == 65
    prefix = blob[:5]
    nonce = blob[5:17]
    binding = b"keysmith-dek\x00" + name.encode() + b"\x00" + struct.pack(">I", version)
    return AESGCM(kek).decrypt(nonce, blob[17:], prefix + binding)


def open_value(dek, ct, context):
    header = ct[:22]
    aad = header + (b"\x00" if context is None else b"\x01" + context.encode())
    return AESGCM(dek).decrypt(header[10:22], ct[22:], aad)


def seal_value(dek, key_id, version, pt, context):
    nonce = os.urandom(12)
    header = bytes([1, 1]) + struct.pack(">II", key_id, version) + nonce
    aad = header + (b"\x00" if context is None else b"\x01" + context.encode())
    return header + AESGCM(dek).encrypt(nonce, pt, aad)


def main():
    print(f"1..{PLANNED}")
    keys = master_keys(sys.argv[1])
    subprocess.run(["psql", "-X", "-q", "-d", "postgres", "-c", "DROP DATABASE IF EXISTS ks_cross",
                    "-c", "CREATE DATABASE ks_cross"], check=True)
    psql("CREATE EXTENSION keysmith")
    psql("SELECT keysmith.create_key('cross')")
    [(key_id, version, kek_version, wrapped)] = psql(
        "SELECT k.key_id, v.version, v.kek_version, encode(v.wrapped_dek, 'hex') "
        "FROM keysmith.key k JOIN keysmith.key_version v USING (key_id) WHERE k.name = 'cross'")
    key_id, version, kek_version = int(key_id), int(version), int(kek_version)
    wrapped = bytes.fromhex(wrapped)
    check(wrapped[1:5] == struct.pack(">I", kek_version), "the wrap records the master key version")
    dek = unwrap(wrapped, keys[kek_version], "cross", version)
    check(len(dek) == 32, "the stored DEK unwraps per the spec")

    rows = psql("SELECT i, encode(keysmith.encrypt_value('cross', 'value ' || i, "
                "CASE WHEN i % 2 = 0 THEN 'ctx:' || i END), 'hex') FROM generate_series(1, 50) i")
    good = 0
    for i, ct in rows:
        i = int(i)
        ctx = f"ctx:{i}" if i % 2 == 0 else None
        ct = bytes.fromhex(ct)
        ok = (ct[0] == 1 and ct[1] == 1 and struct.unpack(">II", ct[2:10]) == (key_id, version)
              and open_value(dek, ct, ctx) == f"value {i}".encode())
        good += ok
    check(good == 50, f"server ciphertexts decrypt independently ({good}/50)")

    ours = seal_value(dek, key_id, version, "from python".encode(), "py")
    [(back,)] = psql(f"SELECT keysmith.decrypt_value('\\x{ours.hex()}'::bytea, 'py')")
    check(back == "from python", "the server decrypts an independently made ciphertext")
    ours = seal_value(dek, key_id, version, b"", None)
    [(back,)] = psql(f"SELECT keysmith.decrypt_value('\\x{ours.hex()}'::bytea) = ''")
    check(back == "t", "and an empty one without context")

    subprocess.run(["psql", "-X", "-q", "-d", "postgres", "-c", "DROP DATABASE ks_cross"], check=True)
    if n != PLANNED:
        print(f"# planned {PLANNED} checks, ran {n}")
    return 1 if failed or n != PLANNED else 0


if __name__ == "__main__":
    sys.exit(main())
