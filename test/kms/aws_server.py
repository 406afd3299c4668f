#!/usr/bin/env python3
"""test/kms/aws_server.py: a test server that IMITATES AWS Key Management
Service over HTTPS, for keysmith's aws_kms provider.

No AWS service can be reached from here, so this implements the documented
subset of the KMS JSON 1.1 API that keysmith uses (POST /, X-Amz-Target:
TrentService.<Operation>, Content-Type: application/x-amz-json-1.1):

  Encrypt      {KeyId, Plaintext, EncryptionContext}  -> {CiphertextBlob, KeyId (ARN)}
  Decrypt      {CiphertextBlob, EncryptionContext, [KeyId]} -> {Plaintext, KeyId}
  ReEncrypt    {CiphertextBlob, SourceEncryptionContext, DestinationKeyId,
                DestinationEncryptionContext}         -> {CiphertextBlob, KeyId, SourceKeyId}
  DescribeKey  {KeyId}                                -> {KeyMetadata: {KeyId, Arn, ...}}

KeyId may be a key id, a key ARN, "alias/<name>" or an alias ARN.  Errors
are AWS's {"__type": "<Type>", "message": ...} with HTTP 400, as KMS
answers them (a bad signature: InvalidSignatureException; an unknown key
id: UnrecognizedClientException; a wrong EncryptionContext:
InvalidCiphertextException).

Every request's Signature Version 4 is VERIFIED with python3-botocore, an
independent implementation: the server takes the signed headers the
client named, has botocore compute the signature with the secret of the
access key id (from --credentials, an AWS shared credentials file, read at
each request), and refuses a mismatch, a wrong scope (date, region,
service), a stale X-Amz-Date, an unsigned Host or X-Amz-Target, and, for a
profile with aws_session_token, a missing or wrong X-Amz-Security-Token.

Key material is AES-256-GCM (python3-cryptography); the EncryptionContext,
as sorted JSON, is the AAD.  A blob is b"KTS1" || key id (36 bytes) ||
material index (1 byte) || nonce (12) || ciphertext || tag.

Test control (see kms_test_server.py), besides the shared faults:
  POST /test/keys   {"alias": "app"}: a new key, and the alias now names it
                    (AWS's manual rotation); answers {"KeyId", "Arn"}
  POST /test/rotate {"alias": "app"}: new backing material for the key (AWS's
                    automatic rotation: old blobs still decrypt)
  POST /test/deny   {"actions": ["Decrypt", ...]}: AccessDeniedException
  fault mode "throttle": HTTP 400 ThrottlingException, as KMS throttles
"""
import base64
import configparser
import datetime
import hmac
import json
import os
import uuid

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

import kms_test_server as base

ACCOUNT = "111122223333"
KEYS = {}       # key id -> [material, ...]
ALIASES = {}    # "alias/name" -> key id
DENY = set()


class AwsError(Exception):
    def __init__(self, type_, msg):
        super().__init__(msg)
        self.type = type_


class Handler(base.Handler):
    def error_body(self, msg):
        return {"__type": "InternalFailure", "message": msg}

    def aws_error(self, type_, msg, status=400):
        self.send_json(status, {"__type": type_, "message": msg},
                       content_type="application/x-amz-json-1.1")

    def op_name(self, method, path):
        return (self.headers.get("X-Amz-Target") or "").replace("TrentService.", "")

    def fault_answer(self, fault):
        if fault["mode"] == "throttle":
            return self.aws_error("ThrottlingException", "Rate exceeded")
        return False

    def arn(self, key_id):
        return "arn:aws:kms:%s:%s:key/%s" % (self.server.args.region, ACCOUNT, key_id)

    def control(self, method, path):
        body = self.body() or {}
        with base.LOCK:
            if path == "/test/keys":
                key_id = str(uuid.uuid4())
                KEYS[key_id] = [AESGCM.generate_key(bit_length=256)]
                ALIASES["alias/" + body["alias"]] = key_id
                return self.send_json(200, {"KeyId": key_id, "Arn": self.arn(key_id)})
            if path == "/test/rotate":
                KEYS[ALIASES["alias/" + body["alias"]]].append(AESGCM.generate_key(bit_length=256))
                return self.send_json(200, {"ok": True})
            if path == "/test/deny":
                DENY.clear()
                DENY.update(body.get("actions", []))
                return self.send_json(200, {"ok": True})
        return False

    # -- SigV4, checked by botocore ------------------------------------
    def verify_signature(self):
        auth = self.headers.get("Authorization") or ""
        if not auth.startswith("AWS4-HMAC-SHA256 "):
            raise AwsError("MissingAuthenticationTokenException", "Missing Authentication Token")
        fields = dict(p.strip().split("=", 1) for p in auth[len("AWS4-HMAC-SHA256 "):].split(","))
        akid, date, region, service, term = fields["Credential"].split("/")
        signed = fields["SignedHeaders"].split(";")
        amzdate = self.headers.get("X-Amz-Date") or ""
        creds = configparser.ConfigParser(interpolation=None)
        creds.read(self.server.args.credentials)
        profile = next((creds[s] for s in creds.sections()
                        if creds[s].get("aws_access_key_id") == akid), None)
        if profile is None:
            raise AwsError("UnrecognizedClientException", "The security token included in the request is invalid.")
        if (date != amzdate[:8] or region != self.server.args.region or service != "kms"
                or term != "aws4_request"):
            raise AwsError("InvalidSignatureException", "Credential should be scoped to a valid region and service.")
        try:
            when = datetime.datetime.strptime(amzdate, "%Y%m%dT%H%M%SZ").replace(tzinfo=datetime.timezone.utc)
        except ValueError:
            raise AwsError("IncompleteSignatureException", "X-Amz-Date is not an ISO 8601 basic date")
        if abs((datetime.datetime.now(datetime.timezone.utc) - when).total_seconds()) > 300:
            raise AwsError("InvalidSignatureException", "Signature expired")
        for must in ("host", "x-amz-date", "x-amz-target"):
            if must not in signed:
                raise AwsError("IncompleteSignatureException", "%s is not signed" % must)
        token = profile.get("aws_session_token")
        if token and (self.headers.get("X-Amz-Security-Token") != token or "x-amz-security-token" not in signed):
            raise AwsError("UnrecognizedClientException", "The security token included in the request is invalid.")
        request = AWSRequest(method=self.command, url="https://%s%s" % (self.headers["Host"], self.path),
                             data=self.raw, headers={h: self.headers[h] for h in signed if h in self.headers})
        request.context["timestamp"] = amzdate
        signer = SigV4Auth(Credentials(akid, profile["aws_secret_access_key"], token), "kms", region)
        expected = signer.signature(signer.string_to_sign(request, signer.canonical_request(request)), request)
        if not hmac.compare_digest(expected, fields["Signature"]):
            raise AwsError("InvalidSignatureException",
                           "The request signature we calculated does not match the signature you provided.")

    # -- the API ---------------------------------------------------------
    def resolve(self, key):
        if key is None:
            raise AwsError("ValidationException", "KeyId is required")
        if key.startswith("arn:aws:kms:"):
            rest = key.split(":", 5)[5]
            key = rest[len("key/"):] if rest.startswith("key/") else rest
        if key.startswith("alias/"):
            key = ALIASES.get(key)
        if key not in KEYS:
            raise AwsError("NotFoundException", "Key '%s' does not exist" % key)
        return key

    def seal(self, key_id, pt, ctx):
        n = len(KEYS[key_id]) - 1
        nonce = os.urandom(12)
        aad = json.dumps(ctx or {}, sort_keys=True).encode()
        return b"KTS1" + key_id.encode() + bytes([n]) + nonce + AESGCM(KEYS[key_id][n]).encrypt(nonce, pt, aad)

    def unseal(self, blob, ctx):
        try:
            assert blob[:4] == b"KTS1"
            key_id = blob[4:40].decode()
            material = KEYS[key_id][blob[40]]
            aad = json.dumps(ctx or {}, sort_keys=True).encode()
            return key_id, AESGCM(material).decrypt(blob[41:53], blob[53:], aad)
        except Exception:
            raise AwsError("InvalidCiphertextException", "")

    def b64(self, body, field):
        try:
            return base64.b64decode(body[field], validate=True)
        except (KeyError, TypeError, ValueError):
            raise AwsError("ValidationException", "%s is not valid base64" % field)

    def api(self, method, path):
        if method != "POST" or path != "/":
            return self.aws_error("UnknownOperationException", "", 404)
        op = self.op_name(method, path)
        try:
            self.verify_signature()
            if self.headers.get("Content-Type") != "application/x-amz-json-1.1":
                raise AwsError("SerializationException", "wrong Content-Type")
            body = self.body()
            if not isinstance(body, dict):
                raise AwsError("SerializationException", "malformed JSON")
            with base.LOCK:
                if op in DENY:
                    raise AwsError("AccessDeniedException", "User is not authorized to perform: kms:%s" % op)
                answer = self.operation(op, body)
        except AwsError as e:
            return self.aws_error(e.type, str(e))
        return self.send_json(200, answer, content_type="application/x-amz-json-1.1")

    def operation(self, op, body):
        if op == "Encrypt":
            key_id = self.resolve(body.get("KeyId"))
            blob = self.seal(key_id, self.b64(body, "Plaintext"), body.get("EncryptionContext"))
            return {"CiphertextBlob": base64.b64encode(blob).decode(), "KeyId": self.arn(key_id),
                    "EncryptionAlgorithm": "SYMMETRIC_DEFAULT"}
        if op == "Decrypt":
            key_id, pt = self.unseal(self.b64(body, "CiphertextBlob"), body.get("EncryptionContext"))
            if "KeyId" in body and self.resolve(body["KeyId"]) != key_id:
                raise AwsError("IncorrectKeyException", "")
            return {"Plaintext": base64.b64encode(pt).decode(), "KeyId": self.arn(key_id),
                    "EncryptionAlgorithm": "SYMMETRIC_DEFAULT"}
        if op == "ReEncrypt":
            src, pt = self.unseal(self.b64(body, "CiphertextBlob"), body.get("SourceEncryptionContext"))
            dst = self.resolve(body.get("DestinationKeyId"))
            blob = self.seal(dst, pt, body.get("DestinationEncryptionContext"))
            return {"CiphertextBlob": base64.b64encode(blob).decode(), "KeyId": self.arn(dst),
                    "SourceKeyId": self.arn(src)}
        if op == "DescribeKey":
            key_id = self.resolve(body.get("KeyId"))
            return {"KeyMetadata": {"KeyId": key_id, "Arn": self.arn(key_id), "Enabled": True,
                                    "KeyState": "Enabled", "KeyUsage": "ENCRYPT_DECRYPT"}}
        raise AwsError("UnknownOperationException", "")


def main():
    ap = base.arguments("imitates AWS KMS")
    ap.add_argument("--credentials", required=True)
    ap.add_argument("--region", default="eu-west-1")
    base.serve(Handler, ap.parse_args())


if __name__ == "__main__":
    main()
