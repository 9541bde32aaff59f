"""An OTLP/HTTP trace receiver for weir's tracing tests, decoding with
OpenTelemetry's official protobuf definitions (PyPI `opentelemetry-proto`),
not weir's code.

Usage: receiver.py. Prints `listening PORT`, then one JSON line per span
received: trace_id, span_id, parent_span_id (hex), name, kind, status
code, service.name, and the attributes. Answers 200 with an empty
ExportTraceServiceResponse; a body that does not decode is answered 400
and printed as {"error": ...}.
"""

import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)


def value(v):
    kind = v.WhichOneof("value")
    return getattr(v, kind) if kind else None


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        status = 200
        try:
            if self.path != "/v1/traces":
                raise ValueError(f"path {self.path}")
            if self.headers.get("content-type") != "application/x-protobuf":
                raise ValueError(f"content-type {self.headers.get('content-type')}")
            req = ExportTraceServiceRequest()
            req.ParseFromString(body)
            for rs in req.resource_spans:
                resource = {a.key: value(a.value) for a in rs.resource.attributes}
                for ss in rs.scope_spans:
                    for s in ss.spans:
                        print(
                            json.dumps(
                                {
                                    "trace_id": s.trace_id.hex(),
                                    "span_id": s.span_id.hex(),
                                    "parent_span_id": s.parent_span_id.hex(),
                                    "name": s.name,
                                    "kind": s.kind,
                                    "status": s.status.code,
                                    "service": resource.get("service.name"),
                                    "scope": ss.scope.name,
                                    "duration_ns": s.end_time_unix_nano - s.start_time_unix_nano,
                                    "attributes": {a.key: value(a.value) for a in s.attributes},
                                }
                            ),
                            flush=True,
                        )
            answer = ExportTraceServiceResponse().SerializeToString()
        except Exception as e:  # reported to the test, answered 400
            print(json.dumps({"error": f"{type(e).__name__}: {e}"}), flush=True)
            status, answer = 400, b""
        self.send_response(status)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)


server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print(f"listening {server.server_address[1]}", flush=True)
server.serve_forever()
