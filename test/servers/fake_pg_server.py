#!/usr/bin/python3
# test/servers/fake_pg_server.py
#
# A test server that imitates a PostgreSQL server on 127.0.0.1, speaking
# just enough of the wire protocol (v3: SSL refused, startup, cleartext
# password authentication, the extended query protocol) for keysmith's
# postgres_remote strategy and its test login.  It exists because a real
# PostgreSQL server cannot be made to send the malformed answers keysmith
# must survive: no row, NULL, the wrong columns, a huge value, a version
# of 16 without scram_iterations, an absurd iteration count, an error
# without a message, a stall after connect or mid-query, garbage bytes.
# It is not PostgreSQL and checks nothing a real server checks beyond the
# passwords below.
#
# Run with /usr/bin/python3 (standard library only):
#   fake_pg_server.py --port N --admin USER:PASSWORD [--modes FILE] [--log FILE]
#                     [--capture FILE] [--mode MODE]
#
# Modes.  --mode is the default for every connection; --modes names a JSON
# file, re-read at every connection, mapping a database name (the startup
# packet's dbname) to a mode, and "*" to a mode for every connection:
#   good            logins as --admin's user with its password succeed;
#                   logins as a role succeed when the password matches the
#                   SCRAM verifier the last ALTER ROLE ... PASSWORD gave it
#                   (PBKDF2 checked here); rolsuper answers f; version 15.6
#   good16          the same, version 16.2, scram_iterations 4096
#   norow           rolsuper: no row              null     rolsuper: NULL
#   twocols         rolsuper: two columns         nocols   no row description at all
#   huge            rolsuper: a 16 MB value       badbool  rolsuper: "yes"
#   manyrows        rolsuper: 100000 rows
#   v16_norow       version 16.2, scram_iterations: no row
#   v16_absurd      version 16.2, scram_iterations 2147483647
#   v16_garbage     version 16.2, scram_iterations "4096abc"
#   badversion      server_version "x"
#   error           every statement: an ErrorResponse, its message long and
#                   holding control bytes
#   error_nomsg     every statement: an ErrorResponse without a message
#   tarpit_connect  accept, then never send a byte (only as "*" or --mode)
#   tarpit_query    log in, then never answer a statement
#   garbage         log in, then answer the first statement with random bytes
#   garbage_auth    answer the startup packet with random bytes
#   capture         ask everyone for a cleartext password, write what comes
#                   to --capture, then refuse the login (an attacker
#                   listening where the test login connects)
# Every connection is logged to --log as one JSON line.
import argparse
import hashlib
import hmac
import json
import os
import re
import socket
import socketserver
import struct
import sys
import threading
import time
import base64

ARGS = None
LOCK = threading.Lock()
VERIFIERS = {}          # role -> SCRAM verifier set by ALTER ROLE


def log(entry):
    if ARGS.log:
        with LOCK, open(ARGS.log, "a") as f:
            f.write(json.dumps(entry) + "\n")


def modes():
    if not ARGS.modes or not os.path.exists(ARGS.modes):
        return {}
    try:
        with open(ARGS.modes) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def msg(kind, payload=b""):
    return kind + struct.pack("!I", len(payload) + 4) + payload


def error_response(code, message, fatal=False, with_message=True):
    fields = b"S" + (b"FATAL" if fatal else b"ERROR") + b"\0" + b"C" + code.encode() + b"\0"
    if with_message:
        fields += b"M" + message + b"\0"
    return msg(b"E", fields + b"\0")


def row_description(names, oid=16):
    out = struct.pack("!H", len(names))
    for n in names:
        out += n.encode() + b"\0" + struct.pack("!IHIhiH", 0, 0, oid, 1 if oid == 16 else -1, -1, 0)
    return msg(b"T", out)


def data_row(values):
    out = struct.pack("!H", len(values))
    for v in values:
        if v is None:
            out += struct.pack("!i", -1)
        else:
            out += struct.pack("!I", len(v)) + v
    return msg(b"D", out)


def scram_matches(verifier, password):
    m = re.match(r"SCRAM-SHA-256\$(\d+):([^$]+)\$([^:]+):(.+)$", verifier or "")
    if not m:
        return False
    iterations, salt, stored = int(m.group(1)), base64.b64decode(m.group(2)), base64.b64decode(m.group(3))
    salted = hashlib.pbkdf2_hmac("sha256", password, salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    return hmac.compare_digest(hashlib.sha256(client_key).digest(), stored)


class Conn(socketserver.BaseRequestHandler):
    def recv_exact(self, n):
        buf = b""
        while len(buf) < n:
            chunk = self.request.recv(n - len(buf))
            if not chunk:
                raise EOFError
            buf += chunk
        return buf

    def stall(self):
        """Hold the connection, reading and discarding, until the client goes."""
        self.request.settimeout(None)
        while self.request.recv(65536):
            pass
        raise EOFError

    def read_message(self):
        kind = self.recv_exact(1)
        (length,) = struct.unpack("!I", self.recv_exact(4))
        return kind, self.recv_exact(length - 4)

    def handle(self):
        entry = {"port": ARGS.port, "at": time.time(), "requests": []}
        try:
            self.serve(entry)
        except (EOFError, ConnectionError, OSError):
            pass
        finally:
            log(entry)

    def serve(self, entry):
        mode = modes().get("*", ARGS.mode)
        entry["mode"] = mode
        if mode == "tarpit_connect":
            self.stall()
        # SSLRequest / GSSENCRequest are refused, then comes the startup packet
        while True:
            (length,) = struct.unpack("!I", self.recv_exact(4))
            body = self.recv_exact(length - 4)
            (code,) = struct.unpack("!I", body[:4])
            if code in (80877103, 80877104):
                entry["requests"].append("ssl" if code == 80877103 else "gssenc")
                self.request.sendall(b"N")
                continue
            if code == 80877102:
                return
            break
        parts = body[4:].split(b"\0")
        params = dict(zip(parts[0::2], parts[1::2]))
        user = params.get(b"user", b"").decode(errors="replace")
        dbname = params.get(b"database", b"").decode(errors="replace")
        mode = modes().get(dbname, mode)
        entry.update(user=user, dbname=dbname, mode=mode)
        if mode == "garbage_auth":
            self.request.sendall(os.urandom(4096))
            self.stall()

        # cleartext password: libpq counts the login as having used it
        self.request.sendall(msg(b"R", struct.pack("!I", 3)))
        kind, payload = self.read_message()
        if kind != b"p":
            return
        password = payload.rstrip(b"\0")
        if mode == "capture":
            entry["captured"] = True
            with LOCK, open(ARGS.capture, "ab") as f:
                f.write(password + b"\n")
            self.request.sendall(error_response("28P01", b"password authentication failed", fatal=True))
            return
        admin_user, admin_pw = ARGS.admin.split(":", 1)
        with LOCK:
            verifier = VERIFIERS.get(user)
        ok = (user == admin_user and hmac.compare_digest(password, admin_pw.encode())) or \
            (user != admin_user and scram_matches(verifier, password))
        entry["login"] = "ok" if ok else "refused"
        if not ok:
            self.request.sendall(error_response("28P01", b'password authentication failed for user "%s"' % user.encode(),
                                                fatal=True))
            return
        version = {"good16": "16.2", "v16_norow": "16.2", "v16_absurd": "16.2", "v16_garbage": "16.2",
                   "badversion": "x"}.get(mode, "15.6")
        out = msg(b"R", struct.pack("!I", 0))
        for k, v in (("server_version", version), ("server_encoding", "UTF8"), ("client_encoding", "UTF8"),
                     ("DateStyle", "ISO, MDY"), ("integer_datetimes", "on"), ("standard_conforming_strings", "on")):
            out += msg(b"S", k.encode() + b"\0" + v.encode() + b"\0")
        out += msg(b"K", struct.pack("!II", os.getpid(), 42)) + msg(b"Z", b"I")
        self.request.sendall(out)
        self.statements(mode, user, entry)

    def statements(self, mode, user, entry):
        entry["statements"] = []
        sql = ""
        failed = False
        while True:
            kind, payload = self.read_message()
            if kind == b"X":
                return
            if kind == b"P":
                sql = payload.split(b"\0")[1].decode(errors="replace")
                entry["statements"].append(sql[:60])
                failed = False
                if mode == "tarpit_query":
                    self.stall()
                if mode == "garbage":
                    self.request.sendall(os.urandom(4096))
                    self.stall()
                if mode in ("error", "error_nomsg"):
                    text = b"permission denied\x01\x1b[31m" + b"x" * 5000
                    self.request.sendall(error_response("42501", text, with_message=(mode == "error")))
                    failed = True
                else:
                    self.request.sendall(msg(b"1"))
            elif kind == b"B":
                if not failed:
                    self.request.sendall(msg(b"2"))
            elif kind == b"D":
                pass
            elif kind == b"E":
                if not failed:
                    self.request.sendall(self.answer(mode, sql))
            elif kind == b"S":
                self.request.sendall(msg(b"Z", b"I"))
            elif kind == b"Q":
                self.request.sendall(error_response("0A000", b"simple queries are not imitated") + msg(b"Z", b"I"))

    def answer(self, mode, sql):
        if "rolsuper" in sql:
            if mode == "norow":
                return row_description(["rolsuper"]) + msg(b"C", b"SELECT 0\0")
            if mode == "null":
                return row_description(["rolsuper"]) + data_row([None]) + msg(b"C", b"SELECT 1\0")
            if mode == "twocols":
                return row_description(["rolsuper", "x"]) + data_row([b"f", b"f"]) + msg(b"C", b"SELECT 1\0")
            if mode == "nocols":
                return msg(b"n") + msg(b"C", b"SELECT 0\0")
            if mode == "huge":
                return row_description(["rolsuper"]) + data_row([b"f" * (16 << 20)]) + msg(b"C", b"SELECT 1\0")
            if mode == "badbool":
                return row_description(["rolsuper"]) + data_row([b"yes"]) + msg(b"C", b"SELECT 1\0")
            if mode == "manyrows":
                return row_description(["rolsuper"]) + data_row([b"f"]) * 100000 + msg(b"C", b"SELECT 100000\0")
            return row_description(["rolsuper"]) + data_row([b"f"]) + msg(b"C", b"SELECT 1\0")
        if "scram_iterations" in sql:
            value = {"v16_absurd": b"2147483647", "v16_garbage": b"4096abc"}.get(mode, b"4096")
            if mode == "v16_norow":
                return row_description(["current_setting"], 25) + msg(b"C", b"SELECT 0\0")
            return row_description(["current_setting"], 25) + data_row([value]) + msg(b"C", b"SELECT 1\0")
        m = re.match(r"ALTER ROLE (\S+) PASSWORD '([^']*)'", sql)
        if m:
            with LOCK:
                VERIFIERS[m.group(1).strip('"')] = m.group(2)
            return msg(b"n") + msg(b"C", b"ALTER ROLE\0")
        return error_response("42601", b"statement not imitated")


class Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


def main():
    global ARGS
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--admin", default="admin:admin-password")
    p.add_argument("--mode", default="good")
    p.add_argument("--modes")
    p.add_argument("--log")
    p.add_argument("--capture")
    p.add_argument("--ready", help="file written once the server listens")
    ARGS = p.parse_args()
    server = Server(("127.0.0.1", ARGS.port), Conn)
    if ARGS.ready:
        with open(ARGS.ready, "w") as f:
            f.write(str(os.getpid()))
    server.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
