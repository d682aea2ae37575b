"""UDP and TCP listeners on asyncio; each query goes to the Responder."""

from __future__ import annotations

import asyncio
import gc
import logging
import socket
import struct

from skydns.responder import Responder

log = logging.getLogger(__name__)

TCP_IDLE = 10.0  # seconds a TCP client may sit between queries
UDP_BUFFER = 4 << 20  # ask for a deep receive queue to ride out pauses (the kernel may cap it)


class UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, responder: Responder) -> None:
        self.responder = responder
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        try:
            wire = self.responder.respond(data, udp=True)
        except Exception:  # one bad query must never stop the listener
            log.exception("udp query failed peer=%s", addr[0])
            return
        if wire is not None and self.transport is not None:
            self.transport.sendto(wire, addr)

    def error_received(self, exc: Exception) -> None:
        log.debug("udp error error=%s", exc)


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
    """Both listeners on one host:port."""

    def __init__(self, responder: Responder, host: str, port: int) -> None:
        self.responder = responder
        self.host = host
        self.port = port
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Server | None = None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._udp, _ = await loop.create_datagram_endpoint(
            lambda: UdpProtocol(self.responder), local_addr=(self.host, self.port))
        sock = self._udp.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, UDP_BUFFER)
        # Long-lived start-up objects need no more collecting: fewer, shorter GC pauses.
        gc.freeze()
        self._tcp = await asyncio.start_server(
            lambda r, w: serve_tcp_client(self.responder, r, w), self.host, self.port)
        log.info("dns listening host=%s port=%d udp=yes tcp=yes", self.host, self.port)

    async def close(self) -> None:
        if self._udp is not None:
            self._udp.close()
        if self._tcp is not None:
            self._tcp.close()
            await self._tcp.wait_closed()
