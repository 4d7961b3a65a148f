#!/usr/bin/python3
"""A small HTTP/1.1 test server for the specs: one thread per connection, keep-alive.

usage: http_server.py PORT

  GET  /delay?ms=200          answers "ok" after 200 ms
  GET  /status/503            answers that status
  POST /echo (any method)     answers the request body, with the request's Content-Type
  GET  /headers               answers the request headers as "name: value" lines, and sends
                              X-Multi twice (a, b) and X-Echo-<name> for each X-Test-* header
  GET  /redirect?to=/path     302 to that path
  GET  /loop                  302 to itself
  GET  /bytes?n=1000          answers n bytes of "x"
  GET  /health                "ok"
"""
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):  # quiet
        pass

    def reply(self, status, body=b"", headers=()):
        if isinstance(body, str):
            body = body.encode()
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def read_body(self):
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def route(self):
        url = urlsplit(self.path)
        q = {k: v[0] for k, v in parse_qs(url.query).items()}
        body = self.read_body()
        path = url.path
        if path == "/delay":
            time.sleep(int(q.get("ms", "200")) / 1000.0)
            return self.reply(200, "ok")
        if path.startswith("/status/"):
            code = int(path.rsplit("/", 1)[1])
            return self.reply(code, "status %d\n" % code)
        if path == "/echo":
            ctype = self.headers.get("Content-Type", "application/octet-stream")
            return self.reply(200, body, [("Content-Type", ctype), ("X-Method", self.command)])
        if path == "/headers":
            lines = "".join("%s: %s\n" % (k.lower(), v) for k, v in self.headers.items())
            extra = [("X-Multi", "a"), ("X-Multi", "b")]
            for k, v in self.headers.items():
                if k.lower().startswith("x-test-"):
                    extra.append(("X-Echo-" + k[7:], v))
            return self.reply(200, lines, extra)
        if path == "/redirect":
            return self.reply(302, "moved\n", [("Location", q.get("to", "/health"))])
        if path == "/loop":
            return self.reply(302, "again\n", [("Location", "/loop")])
        if path == "/bytes":
            return self.reply(200, b"x" * int(q.get("n", "0")))
        if path == "/health":
            return self.reply(200, "ok")
        return self.reply(404, "not found\n")

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = route


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024  # the default (5) drops SYNs under 200 concurrent clients


if __name__ == "__main__":
    Server(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
