"""Support for the dns tests (no tests here): `buoy dns` in a thread, query helpers."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import dns.message
import dns.query
import dns.rdatatype
from etcd_server import free_port, wait_for

from buoy.etcd.keys import KeyLayout
from buoy.etcd.store import EtcdStore
from buoy.skydns.agent import DnsAgent
from buoy.skydns.config import DnsConfig


@dataclass
class RunningDns:
    agent: DnsAgent
    port: int

    def ask(self, name: str, rdtype: str = "A", *, tcp: bool = False) -> dns.message.Message:
        query = dns.message.make_query(name, rdtype)
        if tcp:
            return dns.query.tcp(query, "127.0.0.1", port=self.port, timeout=3)
        return dns.query.udp(query, "127.0.0.1", port=self.port, timeout=3)

    def answers(self, name: str, rdtype: str = "A", *, tcp: bool = False) -> set[str]:
        """The answer section's rdata of type `rdtype`, as text."""
        response = self.ask(name, rdtype, tcp=tcp)
        want = dns.rdatatype.from_text(rdtype)
        return {rd.to_text() for rrset in response.answer if rrset.rdtype == want
                for rd in rrset}

    def wait_revision(self, target: int) -> None:
        """Wait until the index holds revision `target` (the one a put or delete returned)."""
        wait_for(lambda: (self.agent.responder.index is not None
                          and self.agent.responder.index.revision >= target),
                 timeout=10, what=f"index at revision {target}")


@contextmanager
def running_dns(store: EtcdStore, keys: KeyLayout, zone: str = "buoy.internal.",
                extra_zones: tuple[str, ...] = (), lease_poll: float = 0.2) -> Iterator[RunningDns]:
    port = free_port()
    config = DnsConfig(zone=zone, extra_zones=extra_zones, host="127.0.0.1", port=port,
                       lease_poll=lease_poll)
    agent = DnsAgent(config, store, keys, stop=threading.Event())
    thread = threading.Thread(target=agent.run, name="test-dns", daemon=True)
    thread.start()
    try:
        wait_for(agent.listening.is_set, timeout=10, what="dns listening")
        wait_for(agent.watcher.synced.is_set, timeout=10, what="dns synced")
        yield RunningDns(agent, port)
    finally:
        agent.stop.set()
        thread.join(timeout=10)
