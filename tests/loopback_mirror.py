"""A real HTTP server on 127.0.0.1 for download tests (no mocking of the download path).

It serves `files` (name -> bytes) at `<url>/<name>`, honours `Range: bytes=N-` with 206, and can
misbehave per request: each request takes the next mode from `modes` (then `default_mode`):
  normal        honour Range
  truncate      send the full Content-Length, then only `truncate_after` bytes and close
  ignore-range  answer 200 with the whole file even when a Range was asked for
  wrong         send different bytes of the same length (checksum mismatch)
  ignore-if-range  honour Range but not If-Range (a server that splices a changed file)
Every reply carries a strong ETag (a hash of the bytes served), and `If-Range` is honoured: a
validator that is not the current ETag gets the whole file (200). With `publish_digest` the reply
also carries `Digest: sha-256=<base64>` of the file (a server that publishes its checksum).
Every request is recorded (path and Range header) so tests can count them.
"""

from __future__ import annotations

import base64
import hashlib
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote


@dataclass
class SeenRequest:
    path: str
    range: str | None
    if_range: str | None = None


@dataclass
class LoopbackMirror:
    url: str = ""
    files: dict[str, bytes] = field(default_factory=dict)
    modes: list[str] = field(default_factory=list)
    default_mode: str = "normal"
    truncate_after: int = 1000
    publish_digest: bool = False
    requests: list[SeenRequest] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def take_mode(self) -> str:
        return self.modes.pop(0) if self.modes else self.default_mode


class _Handler(BaseHTTPRequestHandler):
    server_version = "LoopbackMirror/1.0"

    def log_message(self, format, *args):  # keep test output quiet
        pass

    def do_GET(self) -> None:
        mirror: LoopbackMirror = self.server.mirror  # type: ignore[attr-defined]
        name = unquote(self.path.lstrip("/"))
        range_header = self.headers.get("Range")
        with mirror.lock:
            mirror.requests.append(SeenRequest(name, range_header, self.headers.get("If-Range")))
            mode = mirror.take_mode()
        body = mirror.files.get(name)
        if body is None:
            self.send_error(404, "Not Found")
            return
        published = base64.b64encode(hashlib.sha256(body).digest()).decode()  # of the real file
        if mode == "wrong":
            body = bytes(b ^ 0xFF for b in body)
        etag = '"' + hashlib.sha256(body).hexdigest()[:20] + '"'
        if_range = self.headers.get("If-Range")
        if if_range is not None and if_range != etag and mode != "ignore-if-range":
            range_header = None  # changed since the client's copy: send the whole file
        start = 0
        if range_header and mode != "ignore-range":
            match = re.fullmatch(r"bytes=(\d+)-", range_header)
            assert match, f"unexpected Range header {range_header!r}"
            start = int(match[1])
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
        payload = body[start:]
        self.send_header("ETag", etag)
        if mirror.publish_digest:
            self.send_header("Digest", "sha-256=" + published)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if mode == "truncate":
            self.wfile.write(payload[: mirror.truncate_after])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(payload)


@contextmanager
def serve_loopback() -> Iterator[LoopbackMirror]:
    """Run a LoopbackMirror on 127.0.0.1 at a free port for the duration of the block."""
    mirror = LoopbackMirror()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.mirror = mirror  # type: ignore[attr-defined]
    mirror.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
    thread.start()
    try:
        yield mirror
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)
