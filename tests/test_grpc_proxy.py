"""buoy's agents through `etcd grpc-proxy` (docs/scale.md: one per host at scale).

The proxy serves gRPC only: announce finds no JSON gateway there and moves to gRPC; register
and listen work through it unchanged, and a container is routed. Watchers of one range
through the proxy are one watcher in etcd. A lease kept alive through the proxy outlives
its holder by up to one more TTL (the proxy goes on refreshing it for a TTL after the
holder's last keep-alive).
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from agent_process import AgentProcess
from docker_helpers import RegisterProcess, run_httpd
from etcd_server import EtcdServer, wait_for
from grpc_proxy import GrpcProxy, metric
from listen_helpers import RunningListener, get

from buoy.etcd.keys import KeyLayout
from buoy.etcd.records import AnnouncePath
from buoy.etcd.settings import EtcdSettings
from buoy.etcd.store import EtcdStore, WatchBatch

WEB = "/internal/app1/dev/web/proxied.example"


@pytest.fixture(scope="module")
def grpc_proxy(etcd: EtcdServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GrpcProxy]:
    proxy = GrpcProxy(tmp_path_factory.mktemp("grpc-proxy"),
                      etcd.endpoint.removeprefix("http://")).start()
    yield proxy
    proxy.stop()


def through(proxy: GrpcProxy) -> EtcdStore:
    return EtcdStore(EtcdSettings.from_strings(proxy.endpoint, timeout=10))


def watchers_in_etcd(etcd: EtcdServer) -> float:
    return metric(etcd.endpoint, "etcd_debugging_mvcc_watcher_total")


@pytest.mark.docker
def test_announce_register_and_listen_route_a_container_through_the_proxy(
        etcd: EtcdServer, grpc_proxy: GrpcProxy, store: EtcdStore, keys: KeyLayout,
        prefix: str, dclient: Any, containers: list[Any], tmp_path: Path) -> None:
    path = AnnouncePath.parse(WEB)
    c = run_httpd(dclient, hostname="web-px", env={"ANNOUNCE_PATH": WEB, "PORT": "80"})
    containers.append(c)
    # register and listen at their defaults (TTL 15 s: the proxy answers a keep-alive when it
    # next refreshes that lease itself, up to TTL/3 + 0.5 s later), with a timeout above that
    reg = RegisterProcess(tmp_path / "register.log", grpc_proxy.endpoint, prefix,
                          "--host-id", "host-px", "--host-ip", "127.0.0.1",
                          "--etcd-timeout", "10").start()
    listener = RunningListener(through(grpc_proxy), keys, tmp_path / "listen",
                               ["/services/internal/app1/dev/web"]).start()
    agent = AgentProcess(["announce"], {
        "ANNOUNCE_PATH": WEB, "PORT": "80", "TYPE": "HTTP", "ANNOUNCE_ID": "web-px",
        "BUOY_ETCD_ENDPOINTS": grpc_proxy.endpoint, "BUOY_PREFIX": prefix,
        "BUOY_ETCD_TIMEOUT": "10"}, tmp_path).start()
    try:
        status = wait_for(lambda: get(listener.http_port, "proxied.example") == (200, "buoy test\n"),
                          30, what="the container routed through the proxy")
        assert status
        assert "serves no JSON gateway" in agent.log()
        # every write went through the proxy into etcd itself
        assert store.get(keys.announce_key(path, "web-px")) is not None
        service = store.get(keys.service_key(path, "web-px"))
        assert service is not None and service.lease
        # a few keep-alive rounds through the proxy: the records stay, nothing times out
        time.sleep(12)
        assert store.get(keys.service_key(path, "web-px")) is not None
        assert get(listener.http_port, "proxied.example") == (200, "buoy test\n")
        for log in (agent.log(), reg.log()):
            assert "Timeout" not in log and "DeadlineExceeded" not in log, log[-2000:]
        c.kill()
        wait_for(lambda: store.get(keys.service_key(path, "web-px")) is None, 15,
                 what="the killed container's record removed through the proxy")
        wait_for(lambda: get(listener.http_port, "proxied.example")[0] != 200, 15,
                 what="no longer routed")
    finally:
        agent.stop()
        listener.stop()
        reg.kill()


def test_watchers_of_one_range_through_the_proxy_are_one_watcher_in_etcd(
        etcd: EtcdServer, grpc_proxy: GrpcProxy, store: EtcdStore, keys: KeyLayout) -> None:
    before = watchers_in_etcd(etcd)
    stores = [through(grpc_proxy) for _ in range(5)]
    seen: list[list[str]] = [[] for _ in stores]
    revision = store.revision()
    cancels = []
    for s, got in zip(stores, seen, strict=True):
        def on(batch: object, got: list[str] = got) -> None:
            if isinstance(batch, WatchBatch):
                got.extend(e.key for e in batch.events)
        cancels.append(s.watch_prefix(keys.services_root, revision + 1, on))
    try:
        key = keys.services_root + "internal/app1/dev/coalesced/one"
        store.put(key, "{}")
        wait_for(lambda: all(key in got for got in seen), 10, what="every watcher told")
        # five watchers through the proxy; etcd holds one for them (two while the proxy
        # merges a late one), not five
        assert watchers_in_etcd(etcd) - before <= 2
    finally:
        for cancel in cancels:
            cancel()
        for s in stores:
            s.close()


def test_a_lease_kept_through_the_proxy_outlives_its_holder_by_at_most_one_more_ttl(
        etcd: EtcdServer, grpc_proxy: GrpcProxy, store: EtcdStore, prefix: str,
        tmp_path: Path) -> None:
    ttl = 3
    agent = AgentProcess(["announce"], {
        "ANNOUNCE_PATH": WEB, "PORT": "80", "TYPE": "HTTP", "ANNOUNCE_ID": "lease-px",
        "BUOY_ETCD_ENDPOINTS": grpc_proxy.endpoint, "BUOY_PREFIX": prefix,
        "ANNOUNCE_TTL": str(ttl), "ANNOUNCE_INTERVAL": "1"}, tmp_path).start()
    key = KeyLayout(prefix).announce_key(AnnouncePath.parse(WEB), "lease-px")
    try:
        wait_for(lambda: store.get(key), 15, what="announced through the proxy")
        time.sleep(2)  # a few keep-alives through the proxy
        agent.signal(signal.SIGKILL)
        agent.wait()
        killed = time.monotonic()
        wait_for(lambda: store.get(key) is None, 4 * ttl + 2, interval=0.1,
                 what="the killed holder's lease expired")
        gone = time.monotonic() - killed
        # at most the proxy's TTL of further refreshes, then the lease's own TTL (+ slack)
        assert gone <= 2 * ttl + 1.5, gone
    finally:
        agent.stop()
