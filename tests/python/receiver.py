#!/usr/bin/env python3
"""An OTLP/HTTP trace receiver for the tests (tests/telemetry_traces.rs,
tests/no_secrets_in_logs.rs).

    receiver.py OUT

Listens on a free port of 127.0.0.1 and prints "ready <port>" once it does.
Every POST /v1/traces must be an ExportTraceServiceRequest in protobuf
(Content-Type application/x-protobuf), decoded with opentelemetry-proto's
generated classes; each span in it is appended to OUT as one JSON object per
line:

    {"trace_id", "span_id", "parent_span_id" (hex, "" for a root),
     "name", "kind" ("server", "client", "internal", ...), "status" ("unset",
     "ok", "error"), "attributes" {key: value}, "events" [{"name",
     "attributes"}], "resource" {key: value}, "scope"}

A request that is not valid OTLP/HTTP protobuf is answered 400 or 415 and
written to OUT as {"rejected": "<why>"}, so a test sees it.
"""

import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

OUT = sys.argv[1]
LOCK = threading.Lock()

KINDS = {
    Span.SPAN_KIND_UNSPECIFIED: "unspecified",
    Span.SPAN_KIND_INTERNAL: "internal",
    Span.SPAN_KIND_SERVER: "server",
    Span.SPAN_KIND_CLIENT: "client",
    Span.SPAN_KIND_PRODUCER: "producer",
    Span.SPAN_KIND_CONSUMER: "consumer",
}
STATUSES = {
    Status.STATUS_CODE_UNSET: "unset",
    Status.STATUS_CODE_OK: "ok",
    Status.STATUS_CODE_ERROR: "error",
}


def value(v):
    which = v.WhichOneof("value")
    if which is None:
        return None
    if which == "array_value":
        return [value(x) for x in v.array_value.values]
    if which == "kvlist_value":
        return attributes(v.kvlist_value.values)
    if which == "bytes_value":
        return v.bytes_value.hex()
    return getattr(v, which)


def attributes(kvs):
    return {kv.key: value(kv.value) for kv in kvs}


def write(lines):
    with LOCK, open(OUT, "a", encoding="utf-8") as f:
        for line in lines:
            f.write(json.dumps(line) + "\n")


class Handler(BaseHTTPRequestHandler):
    def answer(self, status, body=b"", ctype="text/plain"):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        if self.path != "/v1/traces":
            write([{"rejected": f"path {self.path}"}])
            return self.answer(404)
        ctype = self.headers.get("Content-Type", "")
        if ctype != "application/x-protobuf":
            write([{"rejected": f"content type {ctype!r}"}])
            return self.answer(415)
        request = ExportTraceServiceRequest()
        try:
            request.ParseFromString(body)
        except DecodeError as e:
            write([{"rejected": f"not an ExportTraceServiceRequest: {e}"}])
            return self.answer(400)
        lines = []
        for rs in request.resource_spans:
            resource = attributes(rs.resource.attributes)
            for ss in rs.scope_spans:
                for s in ss.spans:
                    lines.append(
                        {
                            "trace_id": s.trace_id.hex(),
                            "span_id": s.span_id.hex(),
                            "parent_span_id": s.parent_span_id.hex(),
                            "name": s.name,
                            "kind": KINDS.get(s.kind, str(s.kind)),
                            "status": STATUSES.get(s.status.code, str(s.status.code)),
                            "status_message": s.status.message,
                            "attributes": attributes(s.attributes),
                            "events": [
                                {"name": e.name, "attributes": attributes(e.attributes)}
                                for e in s.events
                            ],
                            "resource": resource,
                            "scope": ss.scope.name,
                        }
                    )
        write(lines)
        self.answer(
            200,
            ExportTraceServiceResponse().SerializeToString(),
            "application/x-protobuf",
        )

    def log_message(self, *args):
        pass


def main():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    print(f"ready {server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
