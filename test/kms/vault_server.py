#!/usr/bin/env python3
"""test/kms/vault_server.py: a test server that IMITATES HashiCorp Vault's
Transit secrets engine over HTTPS, for keysmith's vault_transit provider.

No Vault can be installed here (Debian 12 does not package it), so this
implements the documented subset keysmith uses, as Vault documents it:

  POST /v1/<mount>/keys/<name>          create an aes256-gcm96 key
  POST /v1/<mount>/keys/<name>/rotate   add a key version
  GET  /v1/<mount>/keys/<name>          {"data": {"latest_version": N, ...}}
  POST /v1/<mount>/encrypt/<name>       {"plaintext", "associated_data"} -> "vault:vN:<b64>"
  POST /v1/<mount>/decrypt/<name>       {"ciphertext", "associated_data"} -> {"plaintext"}
  POST /v1/<mount>/rewrap/<name>        {"ciphertext"}: like Vault, it takes no
                                        associated_data, so a value bound to some
                                        fails: "cipher: message authentication failed"

Every /v1 request needs X-Vault-Token equal to a line of --tokens (read at
each request, so a test can rotate it) and, with --namespace, that
X-Vault-Namespace.  Errors are Vault's {"errors": [...]}: 403 "permission
denied", 400 for bad input.  AES-256-GCM (python3-cryptography) with a
12-byte nonce, as Transit does; the ciphertext body is nonce || ct || tag.

Test control and faults: see kms_test_server.py.
"""
import base64
import os

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

import kms_test_server as base

KEYS = {}             # name -> [key bytes per version, version 1 first]


class Handler(base.Handler):
    def error_body(self, msg):
        return {"errors": [msg]}

    def api(self, method, path):
        if not path.startswith("/v1/"):
            return self.error(404, "unsupported path")
        with open(self.server.args.tokens) as f:
            tokens = {line.strip() for line in f if line.strip()}
        if self.headers.get("X-Vault-Token") not in tokens:
            return self.error(403, "permission denied")
        ns = self.server.args.namespace
        if ns and self.headers.get("X-Vault-Namespace") != ns:
            return self.error(403, "permission denied")
        parts = path[len("/v1/"):].split("/")
        if len(parts) < 3 or parts[0] != self.server.args.mount:
            return self.error(404, "no handler for route")
        op, name = parts[1], parts[2]
        body = self.body() if method == "POST" else {}
        if body is None:
            return self.error(400, "failed to parse JSON input")
        with base.LOCK:
            return self.transit(method, op, name, parts[3:], body)

    def transit(self, method, op, name, rest, body):
        if op == "keys":
            if method == "POST" and rest == ["rotate"]:
                if name not in KEYS:
                    return self.error(400, "encryption key not found")
                KEYS[name].append(AESGCM.generate_key(bit_length=256))
                return self.send_json(200, {"data": {"latest_version": len(KEYS[name])}})
            if method == "POST" and not rest:
                KEYS.setdefault(name, [AESGCM.generate_key(bit_length=256)])
                return self.send_json(200, {"data": {"name": name}})
            if method == "GET" and not rest:
                if name not in KEYS:
                    return self.error(404, "encryption key not found")
                return self.send_json(200, {"data": {"name": name, "type": "aes256-gcm96",
                                                     "latest_version": len(KEYS[name])}})
        if name not in KEYS:
            return self.error(400, "encryption key not found")
        try:
            ad = base64.b64decode(body.get("associated_data", ""), validate=True)
        except ValueError:
            return self.error(400, "failed to decode associated_data")
        if op == "encrypt":
            try:
                pt = base64.b64decode(body["plaintext"], validate=True)
            except (KeyError, ValueError):
                return self.error(400, "failed to decode plaintext as base64")
            v = len(KEYS[name])
            nonce = os.urandom(12)
            ct = AESGCM(KEYS[name][v - 1]).encrypt(nonce, pt, ad or None)
            return self.send_json(200, {"data": {"ciphertext": "vault:v%d:%s" % (
                v, base64.b64encode(nonce + ct).decode()), "key_version": v}})
        if op in ("decrypt", "rewrap"):
            if op == "rewrap":
                ad = b""      # Vault's rewrap has no associated_data parameter
            ct = body.get("ciphertext", "")
            try:
                prefix, ver, b64 = ct.split(":", 2)
                v = int(ver[1:])
                raw = base64.b64decode(b64, validate=True)
                if prefix != "vault" or not 1 <= v <= len(KEYS[name]):
                    raise ValueError
            except ValueError:
                return self.error(400, "invalid ciphertext")
            try:
                pt = AESGCM(KEYS[name][v - 1]).decrypt(raw[:12], raw[12:], ad or None)
            except Exception:
                return self.error(400, "cipher: message authentication failed")
            if op == "decrypt":
                return self.send_json(200, {"data": {"plaintext": base64.b64encode(pt).decode()}})
            nv = len(KEYS[name])
            nonce = os.urandom(12)
            nct = AESGCM(KEYS[name][nv - 1]).encrypt(nonce, pt, None)
            return self.send_json(200, {"data": {"ciphertext": "vault:v%d:%s" % (
                nv, base64.b64encode(nonce + nct).decode())}})
        return self.error(404, "unsupported operation")


def main():
    ap = base.arguments("imitates Vault Transit")
    ap.add_argument("--tokens", required=True)
    ap.add_argument("--namespace", default="")
    ap.add_argument("--mount", default="transit")
    base.serve(Handler, ap.parse_args())


if __name__ == "__main__":
    main()
