#!/usr/bin/python3
"""A misbehaving metrics backend for spec/faults_spec.lua.

usage: fault_server.py PORT [HOST]

  GET /slow/<ms>/metrics          answers a valid exposition after <ms> milliseconds
  GET /metrics                    a valid exposition at once (the sample service's names)
  GET /prom/503/api/v1/query      503 with an HTML body, as a proxy in front of Prometheus says
  GET /prom/422/api/v1/query      422 with Prometheus's error envelope (bad_data)
  GET /prom/garbage/api/v1/query  200 with a body that is not JSON
  GET /prom/truncated/api/v1/query 200 with JSON cut in the middle
  GET /prom/ok/api/v1/query       200 with a one-sample vector (value 1)
  GET /health                     "ok"
"""
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

EXPOSITION = b"""# TYPE http_requests_total counter
http_requests_total{code="200"} 100
http_requests_total{code="500"} 1
# TYPE http_request_duration_seconds histogram
http_request_duration_seconds_bucket{le="0.1"} 90
http_request_duration_seconds_bucket{le="1"} 101
http_request_duration_seconds_bucket{le="+Inf"} 101
http_request_duration_seconds_sum 5.5
http_request_duration_seconds_count 101
"""

OK_VECTOR = b'{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1700000000,"1"]}]}}'


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        pass

    def reply(self, status, body, ctype="text/plain"):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        parts = [p for p in urlsplit(self.path).path.split("/") if p]
        if parts == ["health"]:
            return self.reply(200, b"ok")
        if parts == ["metrics"]:
            return self.reply(200, EXPOSITION)
        if len(parts) == 3 and parts[0] == "slow" and parts[2] == "metrics":
            time.sleep(int(parts[1]) / 1000.0)
            try:
                return self.reply(200, EXPOSITION)
            except (BrokenPipeError, ConnectionResetError):
                return None
        if len(parts) >= 2 and parts[0] == "prom":
            mode = parts[1]
            if mode == "503":
                return self.reply(503, b"<html><body><h1>503 Service Unavailable</h1></body></html>", "text/html")
            if mode == "422":
                return self.reply(422, b'{"status":"error","errorType":"bad_data","error":"1:5: parse error: unexpected <EOF>"}',
                                  "application/json")
            if mode == "garbage":
                return self.reply(200, b"\x00\xffnot json at all <html>", "application/json")
            if mode == "truncated":
                return self.reply(200, OK_VECTOR[:40], "application/json")
            if mode == "ok":
                return self.reply(200, OK_VECTOR, "application/json")
        return self.reply(404, b"not found")


def main():
    port = int(sys.argv[1])
    host = sys.argv[2] if len(sys.argv) > 2 else "127.0.0.1"
    ThreadingHTTPServer.daemon_threads = True
    ThreadingHTTPServer((host, port), Handler).serve_forever()


if __name__ == "__main__":
    main()
