"""HTTP servers on loopback for the W&B tests: one that never answers, one that rejects every key."""

from __future__ import annotations

import contextlib
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@contextlib.contextmanager
def silent_server():
    """A TCP server on loopback that accepts every connection and never answers; yields (url, connections)."""
    srv = socket.create_server(("127.0.0.1", 0))
    conns: list[socket.socket] = []

    def accept():
        while True:
            try:
                conns.append(srv.accept()[0])
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{srv.getsockname()[1]}", conns
    finally:
        srv.close()
        for c in conns:
            c.close()


@contextlib.contextmanager
def unauthorized_server():
    """An HTTP server on loopback that answers 401 to everything (a server that rejects the key)."""
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            self.rfile.read(int(self.headers.get("content-length") or 0))
            self.send_response(401)
            self.send_header("content-length", "0")
            self.end_headers()

        do_POST = do_GET

        def log_message(self, *args):
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{srv.server_port}"
    finally:
        srv.shutdown()
        srv.server_close()
