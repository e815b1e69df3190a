"""A loopback HTTP server (127.0.0.1 only) for download tests: serves byte strings by path, honours
Range requests (206), answers 404 for unknown paths, and can break transfers off to imitate a dropped
connection (a Content-Length promising more than is sent)."""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Served:
    body: bytes
    # send at most this many bytes of the body on the next `truncate_times` requests, then close
    truncate_at: int | None = None
    truncate_times: int = 0
    ranges: bool = True


@dataclass
class LoopbackServer:
    files: dict[str, Served] = field(default_factory=dict)
    requests: list[tuple[str, str | None]] = field(default_factory=list)  # (path, Range header)
    port: int = 0

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}/{path.lstrip('/')}"

    def serve(self, path: str, body: bytes, **kw) -> str:
        self.files["/" + path.lstrip("/")] = Served(body, **kw)
        return self.url(path)


def start() -> tuple[LoopbackServer, ThreadingHTTPServer]:
    state = LoopbackServer()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):  # keep test output clean
            pass

        def do_GET(self):  # noqa: N802 (http.server's naming)
            rng = self.headers.get("Range")
            state.requests.append((self.path, rng))
            item = state.files.get(self.path)
            if item is None:
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            body, start = item.body, 0
            m = re.fullmatch(r"bytes=(\d+)-", rng or "")
            if m and item.ranges:
                start = int(m.group(1))
                if start >= len(body):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(body)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
            else:
                self.send_response(200)
            part = body[start:]
            self.send_header("Content-Length", str(len(part)))
            self.send_header("Connection", "close")
            self.end_headers()
            if item.truncate_times > 0 and item.truncate_at is not None:
                item.truncate_times -= 1
                part = part[: max(0, item.truncate_at - start)]
                self.close_connection = True
            self.wfile.write(part)
            self.wfile.flush()

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.port = server.server_address[1]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return state, server
