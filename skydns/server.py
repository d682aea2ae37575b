"""UDP and TCP listeners; each query goes to the Responder.

UDP, where the load is, is served by plain threads blocked in `recvfrom` on the
socket: no event loop between the kernel and the cached answer, so a repeated
query costs two system calls and a dictionary read. TCP (few clients, long
answers) stays on asyncio. Both sockets are bound before anything else starts, so
an address in use is one clear error (`ListenError`) rather than a traceback.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import socket
import struct
import threading

from buoy.skydns.responder import Responder

log = logging.getLogger(__name__)

TCP_IDLE = 10.0  # seconds a TCP client may sit between queries
UDP_BUFFER = 4 << 20  # ask for a deep receive queue to ride out pauses (the kernel may cap it)
UDP_QUERY_MAX = 4096  # bytes read per datagram; real queries are far smaller


class ListenError(Exception):
    """The listen address cannot be bound (in use, not ours, not permitted)."""


def bind_sockets(host: str, port: int) -> tuple[socket.socket, socket.socket]:
    """The UDP and TCP sockets on host:port, bound (TCP listening); ListenError if not."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    udp = socket.socket(family, socket.SOCK_DGRAM)
    tcp = socket.socket(family, socket.SOCK_STREAM)
    try:
        udp.bind((host, port))
        tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        tcp.bind((host, port))
        tcp.listen(128)
    except OSError as exc:
        udp.close()
        tcp.close()
        raise ListenError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    udp.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, UDP_BUFFER)
    tcp.setblocking(False)
    return udp, tcp


class UdpWorker:
    """One thread answering datagrams from one socket until `close()`."""

    def __init__(self, responder: Responder, sock: socket.socket) -> None:
        self.responder = responder
        self.sock = sock
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="dns-udp", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        recv, send, respond = self.sock.recvfrom, self.sock.sendto, self.responder.respond
        while True:
            try:
                data, addr = recv(UDP_QUERY_MAX)
            except OSError as exc:
                if self._closing:
                    return
                log.debug("udp receive failed error=%s", exc)
                continue
            if self._closing:
                return
            try:
                wire = respond(data, True)
            except Exception:  # one bad query must never stop the listener
                log.exception("udp query failed peer=%s", addr[0])
                continue
            if wire is not None:
                try:
                    send(wire, addr)
                except OSError as exc:  # the client's port may be gone: nothing to do
                    log.debug("udp send failed peer=%s error=%s", addr[0], exc)

    def close(self) -> None:
        """Stop the thread: flag it, then wake its blocked `recvfrom` with one datagram."""
        self._closing = True
        host, port = self.sock.getsockname()[:2]
        with socket.socket(self.sock.family, socket.SOCK_DGRAM) as poke:
            try:
                poke.sendto(b"", (host, port))
            except OSError:
                self.sock.shutdown(socket.SHUT_RD)
        self._thread.join(2.0)
        self.sock.close()


async def serve_tcp_client(responder: Responder, reader: asyncio.StreamReader,
                           writer: asyncio.StreamWriter) -> None:
    """Length-prefixed queries (RFC 1035 4.2.2), several per connection."""
    try:
        while True:
            try:
                head = await asyncio.wait_for(reader.readexactly(2), TCP_IDLE)
                (size,) = struct.unpack("!H", head)
                data = await asyncio.wait_for(reader.readexactly(size), TCP_IDLE)
            except (asyncio.IncompleteReadError, TimeoutError, ConnectionError):
                return
            try:
                wire = responder.respond(data, udp=False)
            except Exception:
                log.exception("tcp query failed")
                return
            if wire is None:
                return
            writer.write(struct.pack("!H", len(wire)) + wire)
            await writer.drain()
    finally:
        writer.close()


class DnsServer:
    """Both listeners on one host:port, from sockets bound beforehand (`bind_sockets`)."""

    def __init__(self, responder: Responder, udp: socket.socket, tcp: socket.socket) -> None:
        self.responder = responder
        self.udp = UdpWorker(responder, udp)
        self.tcp_sock = tcp
        self._tcp: asyncio.Server | None = None

    async def start(self) -> None:
        # Long-lived start-up objects need no more collecting: fewer, shorter GC pauses.
        gc.freeze()
        self.udp.start()
        self._tcp = await asyncio.start_server(
            lambda r, w: serve_tcp_client(self.responder, r, w), sock=self.tcp_sock)
        host, port = self.tcp_sock.getsockname()[:2]
        log.info("dns listening host=%s port=%d udp=yes tcp=yes", host, port)

    async def close(self) -> None:
        await asyncio.to_thread(self.udp.close)
        if self._tcp is not None:
            self._tcp.close()
            await self._tcp.wait_closed()
