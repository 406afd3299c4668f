#!/usr/bin/env python3
"""test/kms/gcp_server.py: a test server that IMITATES Google Cloud KMS
(and Google's OAuth2 token endpoint) over HTTPS, for keysmith's gcp_kms
provider.

No Google service can be reached from here, so this implements the
documented subset keysmith uses:

  POST /token   the JWT bearer grant (RFC 7523): grant_type=urn:ietf:params:
                oauth:grant-type:jwt-bearer&assertion=<JWT>.  The JWT must be
                RS256-signed by the service account's key (verified with its
                public key, python3-cryptography), iss its client_email, aud
                this URL, scope the cloudkms one, iat now, exp within an
                hour.  -> {"access_token", "expires_in", "token_type"};
                otherwise 400 {"error": "invalid_grant"}
  POST /v1/<cryptoKey>:encrypt  {plaintext, additionalAuthenticatedData}
                                -> {name: <cryptoKey>/cryptoKeyVersions/N, ciphertext}
  POST /v1/<cryptoKey>:decrypt  {ciphertext, additionalAuthenticatedData} -> {plaintext}
  GET  /v1/<cryptoKey>          {name, primary: {name, state}}

KMS requests need "Authorization: Bearer <token>" with a token this server
issued (401 UNAUTHENTICATED otherwise).  Key versions are AES-256-GCM keys;
a ciphertext is version (4 bytes) || nonce (12) || ct || tag, the AAD bound.
Errors are Google's {"error": {"code", "message", "status"}}: 403
PERMISSION_DENIED, 404 NOT_FOUND, 400 INVALID_ARGUMENT ("Decryption
failed").

--account names the service account key file (JSON, as Google issues
them), read at each token request.  Test control (see
kms_test_server.py), besides the shared faults:
  POST /test/keys   {"name": "projects/.../cryptoKeys/k"}: a new key, or a new
                    primary version of it (rotation); answers {"version"}
  POST /test/deny   {"ops": ["decrypt", ...]}: 403 for those
"""
import base64
import json
import os
import secrets
import time
import urllib.parse

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

import kms_test_server as base

KEYS = {}      # cryptoKey name -> [aes key per version, version 1 first]
TOKENS = {}
DENY = set()
SCOPE = "https://www.googleapis.com/auth/cloudkms"


def unb64url(s):
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


class Handler(base.Handler):
    def error_body(self, msg):
        return {"error": {"code": 500, "message": msg, "status": "INTERNAL"}}

    def g_error(self, code, status, msg):
        return self.send_json(code, {"error": {"code": code, "message": msg, "status": status}})

    def op_name(self, method, path):
        if path == "/token":
            return "token"
        return path.rsplit(":", 1)[-1] if ":" in path else "get"

    def control(self, method, path):
        body = self.body() or {}
        with base.LOCK:
            if path == "/test/keys":
                KEYS.setdefault(body["name"], []).append(AESGCM.generate_key(bit_length=256))
                return self.send_json(200, {"version": len(KEYS[body["name"]])})
            if path == "/test/deny":
                DENY.clear()
                DENY.update(body.get("ops", []))
                return self.send_json(200, {"ok": True})
        return False

    def token(self):
        form = urllib.parse.parse_qs(self.raw.decode())
        get = lambda k: (form.get(k) or [""])[0]
        if get("grant_type") != "urn:ietf:params:oauth:grant-type:jwt-bearer":
            return self.send_json(400, {"error": "unsupported_grant_type"})
        with open(self.server.args.account) as f:
            account = json.load(f)
        public = serialization.load_pem_private_key(account["private_key"].encode(), None).public_key()
        try:
            h64, c64, s64 = get("assertion").split(".")
            header, claims = json.loads(unb64url(h64)), json.loads(unb64url(c64))
            public.verify(unb64url(s64), ("%s.%s" % (h64, c64)).encode(), padding.PKCS1v15(), hashes.SHA256())
            now = time.time()
            assert header.get("alg") == "RS256"
            assert claims["iss"] == account["client_email"]
            assert claims["aud"] == "https://%s/token" % self.headers["Host"]
            assert SCOPE in claims["scope"].split()
            assert abs(claims["iat"] - now) < 300 and 0 < claims["exp"] - claims["iat"] <= 3600
        except (ValueError, KeyError, AssertionError, InvalidSignature):
            return self.send_json(400, {"error": "invalid_grant", "error_description": "Invalid JWT"})
        access = "ya29." + secrets.token_urlsafe(48)
        with base.LOCK:
            TOKENS[access] = time.time() + 3600
        return self.send_json(200, {"access_token": access, "expires_in": 3599, "token_type": "Bearer"})

    def api(self, method, path):
        if method == "POST" and path == "/token":
            return self.token()
        auth = self.headers.get("Authorization") or ""
        with base.LOCK:
            ok = auth.startswith("Bearer ") and TOKENS.get(auth[7:], 0) > time.time()
        if not ok:
            return self.g_error(401, "UNAUTHENTICATED", "Request had invalid authentication credentials.")
        if not path.startswith("/v1/"):
            return self.g_error(404, "NOT_FOUND", "no such path")
        name, _, op = path[4:].partition(":")
        with base.LOCK:
            versions = list(KEYS.get(name, []))
            denied = (op or "get") in DENY
        if not versions:
            return self.g_error(404, "NOT_FOUND", "CryptoKey %s not found." % name)
        if denied:
            return self.g_error(403, "PERMISSION_DENIED", "Permission 'cloudkms.cryptoKeyVersions.use' denied.")
        if method == "GET" and not op:
            return self.send_json(200, {"name": name, "purpose": "ENCRYPT_DECRYPT",
                                        "primary": {"name": "%s/cryptoKeyVersions/%d" % (name, len(versions)),
                                                    "state": "ENABLED"}})
        body = self.body()
        if method != "POST" or op not in ("encrypt", "decrypt") or not isinstance(body, dict):
            return self.g_error(400, "INVALID_ARGUMENT", "unsupported request")
        try:
            aad = base64.b64decode(body.get("additionalAuthenticatedData", ""), validate=True)
            data = base64.b64decode(body["plaintext" if op == "encrypt" else "ciphertext"], validate=True)
        except (KeyError, ValueError):
            return self.g_error(400, "INVALID_ARGUMENT", "Invalid value")
        if op == "encrypt":
            v = len(versions)
            nonce = os.urandom(12)
            ct = v.to_bytes(4, "big") + nonce + AESGCM(versions[v - 1]).encrypt(nonce, data, aad)
            return self.send_json(200, {"name": "%s/cryptoKeyVersions/%d" % (name, v),
                                        "ciphertext": base64.b64encode(ct).decode()})
        try:
            v = int.from_bytes(data[:4], "big")
            assert 1 <= v <= len(versions)
            pt = AESGCM(versions[v - 1]).decrypt(data[4:16], data[16:], aad)
        except Exception:
            return self.g_error(400, "INVALID_ARGUMENT", "Decryption failed: the ciphertext is invalid.")
        return self.send_json(200, {"plaintext": base64.b64encode(pt).decode(), "usedPrimary": v == len(versions)})


def main():
    ap = base.arguments("imitates Google Cloud KMS")
    ap.add_argument("--account", required=True)
    base.serve(Handler, ap.parse_args())


if __name__ == "__main__":
    main()
