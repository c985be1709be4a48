"""A loopback HTTP file server for download tests: Range requests, a request log, and cut-off bodies.

``serve_directory(root)`` serves the files under ``root`` on ``127.0.0.1`` (a free port) from a
``ThreadingHTTPServer`` in a background thread and yields a ``LoopbackServer``:

- ``server.url(name)`` is the URL of ``root / name``; a missing file is a 404;
- ``server.requests`` logs every GET as a ``Request(path, range)`` (``range``: the ``Range`` header or None);
- single ``bytes=START-[END]`` ranges are answered with 206 (or 416 past the end), unless the server was
  started with ``ignore_range=True``, when every answer is a full 200;
- ``server.cut_off(name, after_bytes, times=1)`` makes the next ``times`` answers for ``name`` promise the
  full ``Content-Length`` but close the connection after ``after_bytes`` body bytes (``times=None``: always).

Use it as a context manager (``with serve_directory(path) as server: ...``) or through a fixture.
"""

from __future__ import annotations

import re
import threading
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

__all__ = ["LoopbackServer", "Request", "serve_directory"]

_RANGE = re.compile(r"bytes=(\d+)-(\d*)$")
_CONTENT_TYPES = {
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".png": "image/png",
    ".html": "text/html; charset=utf-8",
    ".tsv": "text/tab-separated-values",
}


@dataclass(frozen=True)
class Request:
    path: str
    range: str | None


class LoopbackServer:
    """State shared between the test and the handler threads (see the module docstring)."""

    def __init__(self, root: Path, ignore_range: bool):
        self.root = Path(root).resolve()
        self.ignore_range = ignore_range
        self.requests: list[Request] = []
        self._cuts: dict[str, tuple[int, int | None]] = {}
        self._lock = threading.Lock()
        self.port = 0

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{urllib.parse.quote(name)}"

    def cut_off(self, name: str, after_bytes: int, times: int | None = 1) -> None:
        """Close the next ``times`` responses for ``name`` after ``after_bytes`` body bytes."""
        with self._lock:
            self._cuts[name] = (after_bytes, times)

    def requests_for(self, name: str) -> list[Request]:
        with self._lock:
            return [r for r in self.requests if r.path == name]

    def _log(self, request: Request) -> int | None:
        """Record a request; return the byte count to cut its body after (None: send it all)."""
        with self._lock:
            self.requests.append(request)
            after_bytes, times = self._cuts.get(request.path, (None, 0))
            if after_bytes is None or times == 0:
                return None
            if times is not None:
                self._cuts[request.path] = (after_bytes, times - 1)
            return after_bytes


def _handler(server: LoopbackServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format, *args):  # noqa: A002 - silence the default stderr log
            pass

        def do_GET(self):  # noqa: N802 - http.server's naming
            name = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path).lstrip("/")
            range_header = self.headers.get("Range")
            cut_after = server._log(Request(name, range_header))
            path = (server.root / name).resolve()
            if not path.is_relative_to(server.root) or not path.is_file():
                self._send(HTTPStatus.NOT_FOUND, b"not found\n", "text/plain")
                return
            body = path.read_bytes()
            content_type = _CONTENT_TYPES.get(path.suffix.lower(), "application/octet-stream")
            match = _RANGE.match(range_header or "")
            if match is None or server.ignore_range:
                self._send(HTTPStatus.OK, body, content_type, cut_after=cut_after)
                return
            start = int(match.group(1))
            end = min(int(match.group(2)) if match.group(2) else len(body) - 1, len(body) - 1)
            if start >= len(body) or start > end:
                self._send(
                    HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE,
                    b"",
                    "text/plain",
                    headers={"Content-Range": f"bytes */{len(body)}"},
                )
                return
            self._send(
                HTTPStatus.PARTIAL_CONTENT,
                body[start : end + 1],
                content_type,
                cut_after=cut_after,
                headers={"Content-Range": f"bytes {start}-{end}/{len(body)}"},
            )

        def _send(self, status, body, content_type, *, cut_after=None, headers=None):
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Accept-Ranges", "none" if server.ignore_range else "bytes")
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            if cut_after is not None:
                self.send_header("Connection", "close")
            self.end_headers()
            if cut_after is None:
                self.wfile.write(body)
                return
            self.wfile.write(body[:cut_after])
            self.wfile.flush()
            self.close_connection = True

    return Handler


@contextmanager
def serve_directory(root: Path, *, ignore_range: bool = False) -> Iterator[LoopbackServer]:
    """Serve ``root`` on 127.0.0.1 (a free port) for the duration of the block."""
    state = LoopbackServer(root, ignore_range)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    httpd.daemon_threads = True
    state.port = httpd.server_address[1]
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), name="loopback-http", daemon=True)
    thread.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)
