"""`buoy dns` at run time: the watcher feeds the index, asyncio answers from it."""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import threading
from collections.abc import Mapping, Sequence

from buoy.etcd.keys import KeyLayout
from buoy.etcd.store import EtcdStore, KeyValue
from buoy.etcd.watch import Change, PrefixWatcher
from buoy.ops.health import Health, Metric, loop_metrics, records
from buoy.skydns.builder import IndexBuilder
from buoy.skydns.config import DnsConfig
from buoy.skydns.leases import LeaseClock
from buoy.skydns.responder import Responder
from buoy.skydns.server import DnsServer, bind_sockets

log = logging.getLogger(__name__)


class DnsAgent:
    """Owns the watcher thread, the lease clock thread and the asyncio listeners."""

    def __init__(self, config: DnsConfig, store: EtcdStore, keys: KeyLayout,
                 stop: threading.Event | None = None, health: Health | None = None) -> None:
        self.config = config
        self.store = store
        self.keys = keys
        self.stop = stop or threading.Event()
        self.leases = LeaseClock(store, self.stop, interval=config.lease_poll)
        self.responder = Responder(config.zones, self.leases.remaining,
                                   cache_size=config.cache_size)
        self.builder = IndexBuilder(keys, self.responder.publish, self.leases.track,
                                    self.leases.retain)
        self.watcher = PrefixWatcher(store, keys.skydns_root, self._handle, self.stop)
        self.listening = threading.Event()
        self.health = health or Health("dns")
        self.health.add_metrics(self._metrics)
        self.health.add_details(lambda: {"index_ready": self.responder.index is not None})

    def _handle(self, changes: Sequence[Change], view: Mapping[str, KeyValue], revision: int,
                resync: bool) -> None:
        rejected = self.builder.rejected
        self.builder.handle(changes, view, revision, resync)
        if self.builder.rejected > rejected:
            self.health.error(f"malformed skydns records skipped: {self.builder.rejected - rejected}"
                              f" at revision {revision}")
        self.health.set_revision(revision)

    def _metrics(self) -> list[Metric]:
        index = self.responder.index
        return [records("skydns", len(index) if index is not None else 0),
                Metric("dns_rejected", "counter", "Malformed SkyDNS records skipped.",
                       float(self.builder.rejected)),
                Metric("dns_leases", "gauge", "Record leases whose remaining time is tracked.",
                       float(len(self.leases.deadlines))),
                Metric("dns_lease_reads", "counter", "Reads of a lease's remaining time.",
                       float(self.leases.reads)),
                Metric("dns_cached_answers", "gauge", "Finished answers held for reuse.",
                       float(self.responder.cached())),
                *[Metric("dns_queries", "counter", "DNS queries answered, by type and rcode.",
                         float(n), (("type", qtype), ("rcode", rcode)))
                  for (qtype, rcode), n in sorted(self.responder.counts().items())],
                *loop_metrics([self.watcher])]

    def run(self) -> int:
        """Serve until SIGTERM/SIGINT (main thread) or until `stop` is set; return 0.

        The address is bound first: one in use raises `ListenError` before anything starts.
        """
        udp, tcp = bind_sockets(self.config.host, self.config.port)
        log.info("dns starting zones=%s listen=%s:%d prefix=%s", ",".join(self.config.zones),
                 self.config.host, self.config.port, self.keys.skydns_root)
        asyncio.run(self._main(udp, tcp))
        log.info("dns stopped")
        return 0

    async def _main(self, udp: socket.socket, tcp: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self.stop.set)
        server = DnsServer(self.responder, udp, tcp)
        await server.start()
        self.listening.set()
        # Until the first snapshot lands, queries get SERVFAIL rather than a wrong NXDOMAIN.
        watcher = self.watcher.start()
        self.leases.start()
        try:
            await asyncio.to_thread(self.stop.wait)
        finally:
            self.stop.set()
            await server.close()
            # The watcher notices `stop` within half a second; let it cancel its stream.
            await asyncio.to_thread(watcher.join, 2.0)
