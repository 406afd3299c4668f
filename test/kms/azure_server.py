#!/usr/bin/env python3
"""test/kms/azure_server.py: a test server that IMITATES Azure Key Vault
(and its Microsoft Entra token endpoint) over HTTPS, for keysmith's
azure_keyvault provider.

No Azure service can be reached from here, so this implements the
documented subset keysmith uses:

  POST /<tenant>/oauth2/v2.0/token   client credentials grant (form body:
        grant_type, client_id, client_secret, scope) -> {"access_token",
        "token_type": "Bearer", "expires_in"}; a wrong client or secret is
        401 {"error": "invalid_client"}
  POST /keys/<name>[/<version>]/wrapkey?api-version=7.4   {"alg", "value"} -> {"kid", "value"}
  POST /keys/<name>/<version>/unwrapkey?api-version=7.4   {"alg", "value"} -> {"kid", "value"}
  GET  /keys/<name>?api-version=7.4                       {"key": {"kid", "kty"}}

Key Vault requests need "Authorization: Bearer <token>" with a token this
server issued and has not revoked (401 otherwise).  Values are base64url
without padding.  alg RSA-OAEP-256 uses the key version's RSA-2048 key,
A256KW its AES-256 key (RFC 3394), both with python3-cryptography.  Errors
are Key Vault's {"error": {"code", "message"}}: 403 Forbidden, 404
KeyNotFound, 400 BadParameter (a value that does not unwrap).

--clients names a file of "<client_id> <secret>" lines, read at each token
request.  Test control (see kms_test_server.py), besides the shared faults:
  POST /test/keys    {"name": "app"}: a new key, or a new version of it
                     (rotation); answers {"version"}
  POST /test/revoke  {}: every issued token stops working
  POST /test/deny    {"ops": ["unwrapkey", ...]}: 403 Forbidden for those
"""
import base64
import os
import secrets
import time
import urllib.parse

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.keywrap import aes_key_unwrap, aes_key_wrap

import kms_test_server as base

KEYS = {}      # name -> [(version, rsa private key, aes key), ...]
TOKENS = {}    # access token -> expiry
DENY = set()
OAEP = padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)


def b64url(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def unb64url(s):
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


class Handler(base.Handler):
    def error_body(self, msg):
        return {"error": {"code": "InternalError", "message": msg}}

    def kv_error(self, status, code, msg):
        return self.send_json(status, {"error": {"code": code, "message": msg}})

    def op_name(self, method, path):
        if path.endswith("/oauth2/v2.0/token"):
            return "token"
        return path.rsplit("/", 1)[-1] if method == "POST" else "get"

    def control(self, method, path):
        body = self.body() or {}
        with base.LOCK:
            if path == "/test/keys":
                versions = KEYS.setdefault(body["name"], [])
                version = secrets.token_hex(16)
                versions.append((version, rsa.generate_private_key(public_exponent=65537, key_size=2048),
                                 os.urandom(32)))
                return self.send_json(200, {"version": version})
            if path == "/test/revoke":
                TOKENS.clear()
                return self.send_json(200, {"ok": True})
            if path == "/test/deny":
                DENY.clear()
                DENY.update(body.get("ops", []))
                return self.send_json(200, {"ok": True})
        return False

    def token(self):
        form = urllib.parse.parse_qs(self.raw.decode(), strict_parsing=False)
        get = lambda k: (form.get(k) or [""])[0]
        with open(self.server.args.clients) as f:
            clients = dict(line.split(None, 1) for line in f if line.strip())
        clients = {k: v.strip() for k, v in clients.items()}
        if (get("grant_type") != "client_credentials" or get("scope") != "https://vault.azure.net/.default"):
            return self.send_json(400, {"error": "invalid_request"})
        if clients.get(get("client_id")) != get("client_secret") or not get("client_secret"):
            return self.send_json(401, {"error": "invalid_client"})
        access = secrets.token_urlsafe(48)
        with base.LOCK:
            TOKENS[access] = time.time() + 3600
        return self.send_json(200, {"token_type": "Bearer", "expires_in": 3599, "access_token": access})

    def api(self, method, path):
        if method == "POST" and path == "/%s/oauth2/v2.0/token" % self.server.args.tenant:
            return self.token()
        auth = self.headers.get("Authorization") or ""
        with base.LOCK:
            ok = auth.startswith("Bearer ") and TOKENS.get(auth[7:], 0) > time.time()
        if not ok:
            return self.kv_error(401, "Unauthorized", "AKV10000: Request is missing a Bearer or PoP token.")
        if "api-version=7.4" not in self.path:
            return self.kv_error(400, "BadParameter", "api-version is missing")
        parts = path.strip("/").split("/")
        if len(parts) < 2 or parts[0] != "keys":
            return self.kv_error(404, "NotFound", "no such path")
        name = parts[1]
        with base.LOCK:
            versions = list(KEYS.get(name, []))
            denied = parts[-1] in DENY
        if not versions:
            return self.kv_error(404, "KeyNotFound", "A key with (name/id) %s was not found in this key vault." % name)
        if denied:
            return self.kv_error(403, "Forbidden", "Caller is not authorized to perform action on resource.")
        host = "https://" + self.headers["Host"]
        if method == "GET" and len(parts) == 2:
            return self.send_json(200, {"key": {"kid": "%s/keys/%s/%s" % (host, name, versions[-1][0]),
                                                "kty": "RSA"}})
        if method != "POST" or parts[-1] not in ("wrapkey", "unwrapkey") or len(parts) not in (3, 4):
            return self.kv_error(400, "BadParameter", "unsupported operation")
        op = parts[-1]
        if len(parts) == 4:
            match = [v for v in versions if v[0] == parts[2]]
            if not match:
                return self.kv_error(404, "KeyNotFound", "no such key version")
            version = match[0]
        elif op == "wrapkey":
            version = versions[-1]
        else:
            return self.kv_error(400, "BadParameter", "unwrapkey needs a key version")
        body = self.body()
        try:
            alg, value = body["alg"], unb64url(body["value"])
        except (KeyError, TypeError, ValueError):
            return self.kv_error(400, "BadParameter", "alg and value are required")
        try:
            if alg == "RSA-OAEP-256":
                out = version[1].public_key().encrypt(value, OAEP) if op == "wrapkey" else version[1].decrypt(value, OAEP)
            elif alg == "A256KW":
                out = aes_key_wrap(version[2], value) if op == "wrapkey" else aes_key_unwrap(version[2], value)
            else:
                return self.kv_error(400, "BadParameter", "unsupported algorithm")
        except Exception:
            return self.kv_error(400, "BadParameter", "The parameter is incorrect.")
        return self.send_json(200, {"kid": "%s/keys/%s/%s" % (host, name, version[0]), "value": b64url(out)})


def main():
    ap = base.arguments("imitates Azure Key Vault")
    ap.add_argument("--clients", required=True)
    ap.add_argument("--tenant", required=True)
    base.serve(Handler, ap.parse_args())


if __name__ == "__main__":
    main()
