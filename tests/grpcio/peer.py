#!/usr/bin/env python3
"""gRPC peers from grpcio (gRPC's C core, a second implementation weir did
not write), for weir's end-to-end tests (`tests/src/tests/grpc.rs`).

    peer.py server NAME     serves weir.test.Echo on 127.0.0.1:0, prints the
                            port, and serves until stdin closes
    peer.py client ADDR     runs every call type against ADDR (weir), prints
                            what came back as one JSON object

Messages are raw bytes (identity serializers), so no .proto is needed. The
service is the tonic test server's: Unary, ServerStream, ClientStream, Bidi,
with behaviour chosen by request metadata (x-status, x-count, x-delay-ms).
"""

import json
import sys
import time
from concurrent import futures

import grpc

SERVICE = "weir.test.Echo"


def ident(b):
    return b


def code_of(n):
    return next(c for c in grpc.StatusCode if c.value[0] == n)


class Echo(grpc.GenericRpcHandler):
    def __init__(self, name):
        self.name = name

    def service(self, details):
        handlers = {
            "Unary": grpc.unary_unary_rpc_method_handler(self.unary, ident, ident),
            "ServerStream": grpc.unary_stream_rpc_method_handler(self.server_stream, ident, ident),
            "ClientStream": grpc.stream_unary_rpc_method_handler(self.client_stream, ident, ident),
            "Bidi": grpc.stream_stream_rpc_method_handler(self.bidi, ident, ident),
        }
        prefix = "/" + SERVICE + "/"
        if details.method.startswith(prefix):
            return handlers.get(details.method[len(prefix):])
        return None

    def begin(self, ctx):
        md = dict(ctx.invocation_metadata())
        ctx.send_initial_metadata((("x-served-by", self.name),))
        delay = md.get("x-delay-ms")
        if delay:
            time.sleep(int(delay) / 1000)
        return md

    def end_as_asked(self, ctx, md):
        status = md.get("x-status")
        if status:
            ctx.set_trailing_metadata((("x-trailing", "kept"),))
            ctx.abort(code_of(int(status)), "asked for " + status)

    def unary(self, req, ctx):
        md = self.begin(ctx)
        self.end_as_asked(ctx, md)
        return req

    def server_stream(self, req, ctx):
        md = self.begin(ctx)
        for _ in range(int(md.get("x-count", "3"))):
            yield req
        self.end_as_asked(ctx, md)

    def client_stream(self, reqs, ctx):
        self.begin(ctx)
        return b"".join(reqs)

    def bidi(self, reqs, ctx):
        self.begin(ctx)
        for r in reqs:
            yield r


def serve(name):
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
    server.add_generic_rpc_handlers((Echo(name),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(port, flush=True)
    sys.stdin.read()  # until the test closes our stdin (or dies)
    server.stop(grace=0)


def failure(e):
    return {"code": e.code().name, "details": e.details(), "trailing": dict(e.trailing_metadata() or ())}


def client(addr):
    out = {}
    opts = [("grpc.max_receive_message_length", 16 << 20), ("grpc.max_send_message_length", 16 << 20)]
    with grpc.insecure_channel(addr, options=opts) as ch:
        unary = ch.unary_unary("/" + SERVICE + "/Unary", request_serializer=ident, response_deserializer=ident)
        resp, call = unary.with_call(b"hello", metadata=(("x-user", "u1"),), timeout=10)
        out["unary"] = {
            "body": resp.decode(),
            "served_by": dict(call.initial_metadata()).get("x-served-by"),
            "code": call.code().name,
        }
        try:
            unary(b"", metadata=(("x-status", "5"),), timeout=10)
            out["unary_error"] = "no error"
        except grpc.RpcError as e:
            out["unary_error"] = failure(e)
        big = bytes(i % 251 for i in range(3 << 20))
        out["big_ok"] = unary(big, timeout=20) == big
        try:
            unary(b"", metadata=(("x-delay-ms", "3000"),), timeout=0.3)
            out["deadline"] = "no error"
        except grpc.RpcError as e:
            out["deadline"] = e.code().name

        stream = ch.unary_stream("/" + SERVICE + "/ServerStream", request_serializer=ident, response_deserializer=ident)
        out["server_stream"] = [m.decode() for m in stream(b"m", metadata=(("x-count", "4"),), timeout=10)]
        got = []
        try:
            for m in stream(b"m", metadata=(("x-count", "2"), ("x-status", "9")), timeout=10):
                got.append(m.decode())
            out["server_stream_error"] = "no error"
        except grpc.RpcError as e:
            out["server_stream_error"] = dict(failure(e), received=len(got))

        cs = ch.stream_unary("/" + SERVICE + "/ClientStream", request_serializer=ident, response_deserializer=ident)
        out["client_stream"] = cs(iter([b"a", b"bb", b"ccc"]), timeout=10).decode()

        bidi = ch.stream_stream("/" + SERVICE + "/Bidi", request_serializer=ident, response_deserializer=ident)
        out["bidi"] = [m.decode() for m in bidi(iter([b"p%d" % i for i in range(10)]), timeout=10)]
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "server":
        serve(sys.argv[2])
    elif len(sys.argv) == 3 and sys.argv[1] == "client":
        client(sys.argv[2])
    else:
        sys.exit(__doc__)
