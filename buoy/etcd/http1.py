"""A minimal HTTP/1.1 client connection over one kept-open socket (standard library only).

`http.client` brings the `email` package and `ssl` with it (about 5 MB of RSS in a
Python that should stay small in every container); this speaks just what etcd's JSON
gateway needs: a request with a body, and a response with Content-Length, chunked
encoding or read-to-close. `ssl` is imported only for https.
"""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING, BinaryIO

if TYPE_CHECKING:
    import ssl

MAX_LINE = 65536


class ProtocolError(ConnectionError):
    """The peer closed the connection or answered something that is not HTTP/1.x."""


class Connection:
    """One HTTP/1.1 connection to host:port, opened on first use and kept open."""

    def __init__(self, host: str, port: int, timeout: float,
                 context: ssl.SSLContext | None = None) -> None:
        self.host = host
        self.port = port
        self.timeout = timeout
        self.context = context
        self._sock: socket.socket | None = None
        self._reader: BinaryIO | None = None

    @property
    def is_open(self) -> bool:
        return self._sock is not None

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def _open(self) -> None:
        sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.context is not None:
            try:
                sock = self.context.wrap_socket(sock, server_hostname=self.host)
            except BaseException:
                sock.close()
                raise
        self._sock = sock
        self._reader = sock.makefile("rb")

    def request(self, method: str, path: str, body: bytes = b"",
                headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        """Send one request and read the whole response: (status, body)."""
        if self._sock is None:
            self._open()
        assert self._sock is not None and self._reader is not None
        lines = [f"{method} {path} HTTP/1.1", f"Host: {self.host}:{self.port}",
                 f"Content-Length: {len(body)}"]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        self._sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
        status, fields = self._head(self._reader)
        data = self._body(self._reader, fields)
        if fields.get("connection", "").lower() == "close" or "content-length" not in fields \
                and "chunked" not in fields.get("transfer-encoding", "").lower():
            self.close()
        return status, data

    @staticmethod
    def _line(reader: BinaryIO) -> bytes:
        line = reader.readline(MAX_LINE)
        if not line:
            raise ProtocolError("connection closed by the server")
        return line

    def _head(self, reader: BinaryIO) -> tuple[int, dict[str, str]]:
        parts = self._line(reader).split(None, 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
            raise ProtocolError(f"not an HTTP/1.x status line: {parts[:2]!r}")
        fields: dict[str, str] = {}
        while (line := self._line(reader)) not in (b"\r\n", b"\n"):
            name, _, value = line.decode("latin-1").partition(":")
            fields[name.strip().lower()] = value.strip()
        return int(parts[1]), fields

    def _body(self, reader: BinaryIO, fields: dict[str, str]) -> bytes:
        if "chunked" in fields.get("transfer-encoding", "").lower():
            out: list[bytes] = []
            while True:
                size = int(self._line(reader).split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self._line(reader) not in (b"\r\n", b"\n"):
                        pass  # trailers
                    return b"".join(out)
                out.append(self._exactly(reader, size))
                self._line(reader)  # the CRLF after each chunk
        if "content-length" in fields:
            return self._exactly(reader, int(fields["content-length"]))
        return reader.read()  # no length: the body ends when the server closes

    @staticmethod
    def _exactly(reader: BinaryIO, size: int) -> bytes:
        data = reader.read(size)
        if len(data) != size:
            raise ProtocolError("connection closed in the middle of a response")
        return data
