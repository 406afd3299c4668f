#!/usr/bin/python3
"""test/vectors.py

Computes the test vectors of docs/format.md with an implementation that
shares no code with keysmith (Python's `cryptography` package, Debian's
python3-cryptography), straight from the byte layout in the spec.  The C
unit tests pin the same vectors, so the two implementations are checked
against each other.  Run: /usr/bin/python3 test/vectors.py
"""
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
import struct

DEK = bytes(range(32))
NONCE = bytes(range(0xA0, 0xAC))


def seal(key_id, version, plaintext, context):
    header = bytes([1, 1]) + struct.pack(">II", key_id, version) + NONCE
    aad = header + (b"\x00" if context is None else b"\x01" + context)
    return header + AESGCM(DEK).encrypt(NONCE, plaintext, aad)


VECTORS = [
    ("v1", 1, 1, b"hello, keysmith", None),
    ("v2", 1, 1, b"hello, keysmith", b"customer:42"),
    ("v3", 1, 1, b"", b""),
    ("v4", 0x01020304, 7, b"\x00\xff binary", None),
]

for name, kid, ver, pt, ctx in VECTORS:
    print(name, seal(kid, ver, pt, ctx).hex())

# local provider wrap: master key 0x40..0x5f, version 3, key "demo", DEK version 1
KEK = bytes(range(0x40, 0x60))
WRAP_NONCE = bytes(range(0xB0, 0xBC))
prefix = bytes([1]) + struct.pack(">I", 3)
binding = b"keysmith-dek\x00" + b"demo" + b"\x00" + struct.pack(">I", 1)
ct = AESGCM(KEK).encrypt(WRAP_NONCE, DEK, prefix + binding)
print("wrap", (prefix + WRAP_NONCE + ct).hex())
