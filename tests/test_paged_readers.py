"""Every reader of a prefix starts on one larger than gRPC's 4 MiB receive limit:
`buoy ls`, register (its /announce watch and its reconcile of /services and /skydns)
and `buoy dns` (its /skydns index). Each store here keeps gRPC's default limit, so
only paging can make these reads fit."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator

import pytest
from click.testing import CliRunner
from conftest import store_for
from etcd_server import EtcdServer, wait_for
from paged_helpers import GRPC_DEFAULT_LIMIT, PageCount, fill, limited_store, small_limit
from test_dns_support import running_dns

from buoy.etcd.dns_records import instance_entry
from buoy.etcd.keys import KeyLayout
from buoy.etcd.records import AnnouncePath, AnnounceRecord, ServiceRecord
from buoy.etcd.store import EtcdStore
from buoy.ls import ls

__all__ = ["limited_store", "small_limit"]  # fixtures

PATHS = [AnnouncePath.parse(f"/internal/app{a}/dev/svc{s}") for a in range(10) for s in range(10)]
PAD = "x" * 800  # an optional field readers ignore: 6,000 records make about 6 MB


def instance_id(i: int) -> str:
    return f"{i:012x}"


def announces(keys: KeyLayout, count: int = 6000) -> Iterator[tuple[str, str]]:
    for i in range(count):
        path = PATHS[i % len(PATHS)]
        record = AnnounceRecord.for_path(path, instance_id(i), 8000, "HTTP")
        data = {**record.to_dict(), "NOTE": PAD}
        yield keys.announce_key(path, instance_id(i)), json.dumps(data)


def services(keys: KeyLayout, host: str, count: int = 6000) -> Iterator[tuple[str, str]]:
    for i in range(count):
        path = PATHS[i % len(PATHS)]
        record = ServiceRecord.from_announce(
            AnnounceRecord.for_path(path, instance_id(i), 8000, "HTTP"),
            ip="10.1.0.1", ext_port=30000 + i % 30000, host=host)
        yield keys.service_key(path, instance_id(i)), json.dumps({**record.to_dict(),
                                                                  "NOTE": PAD})


def test_ls_lists_a_prefix_larger_than_the_limit(etcd: EtcdServer, small_limit: None,
                                                 keys: KeyLayout) -> None:
    assert fill(etcd, announces(keys)) > 5 << 20
    fill(etcd, services(keys, "other-host", count=10))
    count = PageCount()
    result = CliRunner().invoke(ls, ["--json", "--etcd-endpoints", etcd.endpoint,
                                     "--prefix", keys.prefix])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    listed = {e["id"] for entries in data["announce"].values() for e in entries}
    assert listed == {instance_id(i) for i in range(6000)}
    routed = [e for entries in data["announce"].values() for e in entries if e["routed"]]
    assert {e["id"] for e in routed} == {instance_id(i) for i in range(10)}
    assert sum(len(v) for v in data["services"].values()) == 10
    assert count.pages >= 6 and count.largest < GRPC_DEFAULT_LIMIT


def test_register_starts_on_prefixes_larger_than_the_limit(etcd: EtcdServer, small_limit: None,
                                                           keys: KeyLayout) -> None:
    """6 MB of /announce (watched) and 6 MB of another host's /services (read by the
    reconcile): register syncs, reconciles, and leaves the other host's records alone."""
    from docker_helpers import docker_client

    from buoy.register.agent import Register
    from buoy.register.config import RegisterConfig

    try:
        docker_client().close()
    except Exception as exc:  # noqa: BLE001 - no Docker engine on this machine
        pytest.skip(f"needs a Docker engine: {exc}")
    fill(etcd, announces(keys))
    fill(etcd, services(keys, "other-host"))
    store = store_for(etcd, timeout=10)
    reg = Register(RegisterConfig(host_id="paged-host", host_ip="127.0.0.1", ttl=6, resync=60),
                   store, keys)
    thread = threading.Thread(target=reg.run, kwargs={"install_signals": False}, daemon=True)
    count = PageCount()
    thread.start()
    try:
        wait_for(lambda: reg.reconciles >= 1, 30, what="register's first reconcile")
        assert reg.watcher.synced.is_set() and len(reg.watcher.view) == 6000
        assert len(reg.announce_view) == 6000
    finally:
        reg.stop.set()
        thread.join(timeout=20)
    assert count.pages >= 12 and count.largest < GRPC_DEFAULT_LIMIT
    check = store_for(etcd, timeout=10)
    _, kvs = check.get_prefix(keys.services_root)
    assert len(kvs) == 6000
    assert all(json.loads(kv.value)["HOST"] == "other-host" for kv in kvs)
    check.close()


def test_dns_answers_from_an_index_larger_than_the_limit(etcd: EtcdServer,
                                                         limited_store: EtcdStore,
                                                         keys: KeyLayout) -> None:
    """40,000 real SkyDNS instance records (about 5 MB): the index is complete and
    answers, where an unpaged read answered SERVFAIL for ever above about 33,000."""
    def records() -> Iterator[tuple[str, str]]:
        for i in range(40_000):
            path = PATHS[i % len(PATHS)]
            record = ServiceRecord.from_announce(
                AnnounceRecord.for_path(path, instance_id(i), 5432, "TCP"),
                ip=f"10.{i >> 16}.{(i >> 8) & 255}.{i & 255}", ext_port=30000 + i % 30000,
                host="h1")
            yield instance_entry(keys, record, path)

    assert fill(etcd, records()) > 4 << 20
    count = PageCount()
    with running_dns(limited_store, keys) as dns_srv:
        assert count.pages >= 5 and count.largest < GRPC_DEFAULT_LIMIT
        last = 39_999
        name = f"{instance_id(last)}.svc9.dev.app9.internal.buoy.internal."
        assert dns_srv.answers(name, "A") == {"10.0.156.63"}
        first = f"{instance_id(0)}.svc0.dev.app0.internal.buoy.internal."
        assert dns_srv.answers(first, "A") == {"10.0.0.0"}
        assert len(dns_srv.agent.watcher.view) == 40_000
