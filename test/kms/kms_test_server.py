"""test/kms/kms_test_server.py: what keysmith's KMS test servers share.

Each test server in test/kms/ IMITATES one KMS's documented HTTP API over
HTTPS (no real Vault, AWS, Azure or Google service can be installed or
reached here); this module is the part that is not the API:

  - TLS with a certificate the test made (openssl, at test time);
  - test control, needing X-Test-Control equal to the content of --control:
      POST /test/fault {"mode": none|latency|429|500|redirect|big|badjson
                                (and a server's own modes),
                        "count": N, "delay": seconds, "location": URL,
                        "after": N (requests served before the fault starts)}
      GET  /test/stats {"requests": N, "by_path": {...}, "by_op": {...}}
    and whatever control paths a server adds (Handler.control);
  - the faults: each faulted request consumes one of count (-1: all).

A server subclasses Handler, shapes errors as its service does
(error_body), serves the API (api) and counts operations (op_name).
"""
import argparse
import json
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LOCK = threading.Lock()
FAULT = {"mode": "none", "count": 0, "delay": 0, "location": "", "after": 0}
STATS = {"requests": 0, "by_path": {}, "by_op": {}}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):  # quiet
        pass

    # -- for subclasses -------------------------------------------------
    def error_body(self, msg):
        return {"error": msg}

    def api(self, method, path):
        return self.error(404, "no API")

    def control(self, method, path):
        """Serve a server's own /test/ path; False if it has none."""
        return False

    def op_name(self, method, path):
        return path

    def fault_answer(self, fault):
        """Answer a server's own fault mode; False if it is not one."""
        return False

    # -- shared ---------------------------------------------------------
    def error(self, status, msg, extra=None):
        self.send_json(status, self.error_body(msg), extra)

    def send_json(self, status, obj, extra=None, content_type="application/json"):
        body = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def send_raw(self, status, body, extra=None):
        self.send_response(status)
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def body(self):
        try:
            return json.loads(self.raw) if self.raw else {}
        except ValueError:
            return None

    def control_ok(self):
        with open(self.server.args.control) as f:
            return self.headers.get("X-Test-Control") == f.read().strip()

    def take_fault(self):
        with LOCK:
            if FAULT["mode"] == "none" or FAULT["count"] == 0:
                return None
            if FAULT["after"] > 0:
                FAULT["after"] -= 1
                return None
            if FAULT["count"] > 0:
                FAULT["count"] -= 1
            return dict(FAULT)

    def do_GET(self):
        self.route("GET")

    def do_POST(self):
        self.route("POST")

    def route(self, method):
        # the body is read first, whatever the answer: on a kept-alive
        # connection an unread body would be taken for the next request
        n = int(self.headers.get("Content-Length") or 0)
        self.raw = self.rfile.read(n) if n else b""
        path = self.path.split("?")[0]
        if path.startswith("/test/"):
            if not self.control_ok():
                return self.error(403, "permission denied")
            if path == "/test/fault" and method == "POST":
                with LOCK:
                    FAULT.update({"mode": "none", "count": 0, "delay": 0, "location": "", "after": 0})
                    FAULT.update(self.body() or {})
                return self.send_json(200, {"ok": True})
            if path == "/test/stats":
                with LOCK:
                    return self.send_json(200, STATS)
            if self.control(method, path) is False:
                return self.error(404, "no such test endpoint")
            return None
        op = self.op_name(method, path)
        with LOCK:
            STATS["requests"] += 1
            STATS["by_path"][path] = STATS["by_path"].get(path, 0) + 1
            STATS["by_op"][op] = STATS["by_op"].get(op, 0) + 1
        fault = self.take_fault()
        if fault:
            mode = fault["mode"]
            if mode == "latency":
                time.sleep(float(fault["delay"]))
            elif mode == "429":
                return self.error(429, "rate limited", {"Retry-After": "1"})
            elif mode == "500":
                return self.error(500, "internal error")
            elif mode == "redirect":
                return self.send_raw(307, b"", {"Location": fault["location"] + self.path})
            elif mode == "big":
                return self.send_raw(200, b'{"data": {"pad": "' + b"x" * (1024 * 1024) + b'"}}',
                                     {"Content-Type": "application/json"})
            elif mode == "badjson":
                return self.send_raw(200, b"<html>not a KMS</html>", {"Content-Type": "text/html"})
            elif self.fault_answer(fault) is not False:
                return None
        return self.api(method, path)


def arguments(description):
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--cert", required=True)
    ap.add_argument("--key", required=True)
    ap.add_argument("--control", required=True)
    return ap


def serve(handler, args):
    """Serve HTTPS on 127.0.0.1 only, until killed."""
    srv = ThreadingHTTPServer(("127.0.0.1", args.port), handler)
    srv.daemon_threads = True
    srv.args = args
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(args.cert, args.key)
    srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    srv.serve_forever()
