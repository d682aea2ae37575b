"""register against a real Docker Engine and a real etcd."""

from __future__ import annotations

import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from docker_helpers import (
    PrivateDockerd,
    ensure_image,
    published_port,
    run_httpd,
)
from etcd_server import EtcdServer, wait_for
from register_fixtures import StartRegister, register_starter

from buoy.etcd.dns_records import SkyDNSRecord, instance_name
from buoy.etcd.keys import KeyLayout
from buoy.etcd.records import AnnouncePath, AnnounceRecord, ServiceRecord
from buoy.etcd.store import EtcdStore

pytestmark = pytest.mark.docker

WEB = AnnouncePath.parse("/internal/app1/dev/web")
ENV = {"ANNOUNCE_PATH": str(WEB), "PORT": "80"}


@pytest.fixture
def start_register(tmp_path: Path, etcd: EtcdServer, prefix: str) -> Iterator[StartRegister]:
    yield from register_starter(tmp_path, etcd, prefix, "10.9.8.7")


def run(dclient: Any, made: list[Any], **kwargs: Any) -> Any:
    c = run_httpd(dclient, **kwargs)
    made.append(c)
    c.reload()
    return c


def put_announce(store: EtcdStore, keys: KeyLayout, path: AnnouncePath, instance_id: str,
                 port: int = 80, type_: str = "HTTP") -> str:
    key = keys.announce_key(path, instance_id)
    store.put(key, AnnounceRecord.for_path(path, instance_id, port, type_).to_json())  # type: ignore[arg-type]
    return key


def service(store: EtcdStore, keys: KeyLayout, path: AnnouncePath,
            instance_id: str) -> ServiceRecord | None:
    kv = store.get(keys.service_key(path, instance_id))
    return ServiceRecord.from_json(kv.value) if kv else None


def lease_of(store: EtcdStore, key: str) -> int | None:
    kv = store.get(key)
    return kv.lease if kv else None


def test_mapping_writes_service_and_dns(dclient: Any, containers: list[Any], store: EtcdStore,
                                        keys: KeyLayout, start_register: StartRegister) -> None:
    c = run(dclient, containers, hostname="web-map", env=ENV)
    reg = start_register()
    put_announce(store, keys, WEB, "web-map")
    rec = wait_for(lambda: service(store, keys, WEB, "web-map"), 10, what="service record")
    port = published_port(c)
    # Published on 127.0.0.1: that binding's address wins over --host-ip.
    assert (rec.ip, rec.ext_port, rec.host, rec.port, rec.type) == (
        "127.0.0.1", port, "host-a", 80, "HTTP")
    assert lease_of(store, keys.service_key(WEB, "web-map"))
    dns = wait_for(lambda: store.get(keys.skydns_key(instance_name(WEB, "web-map"))), 5,
                   what="DNS record")
    assert SkyDNSRecord.from_json(dns.value) == SkyDNSRecord(host="127.0.0.1", port=port, ttl=15)
    with urllib.request.urlopen(f"http://{rec.ip}:{rec.ext_port}/", timeout=5) as resp:
        assert resp.read() == b"buoy test\n"
    # The announce goes away: so do both records.
    store.delete(keys.announce_key(WEB, "web-map"))
    wait_for(lambda: service(store, keys, WEB, "web-map") is None, 10, what="record removed")
    # the SkyDNS record is the next delete of the same sync
    wait_for(lambda: store.get(keys.skydns_key(instance_name(WEB, "web-map"))) is None, 2,
             what="DNS record removed")
    assert reg.proc is not None and reg.proc.poll() is None


def test_id_prefix_and_unpublished_port(dclient: Any, containers: list[Any], store: EtcdStore,
                                        keys: KeyLayout, start_register: StartRegister) -> None:
    by_id = run(dclient, containers, hostname="not-the-id", env=ENV)
    hidden = run(dclient, containers, hostname="web-hidden", env=ENV, publish=False)
    reg = start_register()
    short = by_id.id[:12]
    put_announce(store, keys, WEB, "web-hidden")
    put_announce(store, keys, WEB, short)
    rec = wait_for(lambda: service(store, keys, WEB, short), 10, what="record by ID prefix")
    assert rec.ext_port == published_port(by_id)
    reg.wait_log("port=80/tcp is not published")
    assert service(store, keys, WEB, "web-hidden") is None
    assert reg.log().count("port=80/tcp is not published") == 1  # one warning, not one per sync
    assert hidden.status == "running"


@pytest.mark.parametrize("how", ["kill", "stop"])
def test_container_end_removes_record_at_once(how: str, dclient: Any, containers: list[Any],
                                              store: EtcdStore, keys: KeyLayout,
                                              start_register: StartRegister) -> None:
    c = run(dclient, containers, hostname=f"web-{how}", env=ENV)
    start_register("--ttl", "60", "--resync", "600")
    put_announce(store, keys, WEB, f"web-{how}")
    wait_for(lambda: service(store, keys, WEB, f"web-{how}"), 10, what="service record")
    c.kill() if how == "kill" else c.stop(timeout=1)
    # TTL 60 s and resync 600 s: only the Docker event can remove it this soon.
    wait_for(lambda: service(store, keys, WEB, f"web-{how}") is None, 5, what="record removed")
    wait_for(lambda: store.get(keys.skydns_key(instance_name(WEB, f"web-{how}"))) is None, 2,
             what="DNS record removed")


def test_recreated_with_new_port_is_followed(dclient: Any, containers: list[Any],
                                             store: EtcdStore, keys: KeyLayout,
                                             start_register: StartRegister) -> None:
    first = run(dclient, containers, hostname="web-move", env=ENV)
    start_register("--ttl", "60", "--resync", "600")
    put_announce(store, keys, WEB, "web-move")
    old = wait_for(lambda: service(store, keys, WEB, "web-move"), 10, what="first record")
    assert old.ext_port == published_port(first)
    first.remove(force=True)
    wait_for(lambda: service(store, keys, WEB, "web-move") is None, 5, what="record removed")
    second = run(dclient, containers, hostname="web-move", env=ENV)
    new_port = published_port(second)
    assert new_port != old.ext_port
    wait_for(lambda: (r := service(store, keys, WEB, "web-move")) and r.ext_port == new_port,
             10, what="record with the new port")
    dns_key = keys.skydns_key(instance_name(WEB, "web-move"))
    wait_for(lambda: (kv := store.get(dns_key)) and SkyDNSRecord.from_json(kv.value).port
             == new_port, 5, what="DNS record with the new port")


def test_spoofing_refused(dclient: Any, containers: list[Any], store: EtcdStore,
                          keys: KeyLayout, start_register: StartRegister) -> None:
    run(dclient, containers, hostname="web-spoof", env=ENV)
    run(dclient, containers, hostname="web-honest", env=ENV)
    reg = start_register()
    db = AnnouncePath.parse("/internal/app1/dev/db")
    put_announce(store, keys, db, "web-spoof")  # another service's path
    put_announce(store, keys, WEB, "web-spoof", port=8080)  # another port
    put_announce(store, keys, WEB, "web-honest")  # written last: processed after the others
    wait_for(lambda: service(store, keys, WEB, "web-honest"), 10, what="honest record")
    reg.wait_log("spoofing", count=2)
    assert service(store, keys, db, "web-spoof") is None
    assert service(store, keys, WEB, "web-spoof") is None
    assert store.get(keys.skydns_key(instance_name(db, "web-spoof"))) is None
    name = [c for c in containers if c.attrs["Config"]["Hostname"] == "web-spoof"][0].name
    assert f"container={name}" in reg.log()
    put_announce(store, keys, WEB, "web-honest2")  # a later change: still logged only once
    reg.wait_log("register key=", count=2)
    assert reg.log().count("spoofing") == 2


def test_labels_only_container(dclient: Any, containers: list[Any], store: EtcdStore,
                               keys: KeyLayout, start_register: StartRegister) -> None:
    db = AnnouncePath.parse("/internal/app1/dev/db")
    labels = {"buoy.path": str(db), "buoy.port": "80", "buoy.type": "TCP"}
    start_register("--ttl", "60", "--resync", "600")
    c = run(dclient, containers, hostname="db-labels", labels=labels)
    rec = wait_for(lambda: service(store, keys, db, "db-labels"), 10, what="label record")
    assert (rec.type, rec.port, rec.ext_port) == ("TCP", 80, published_port(c))
    ann_key = keys.announce_key(db, "db-labels")
    ann = store.get(ann_key)
    assert ann is not None and AnnounceRecord.from_json(ann.value).type == "TCP"
    # its own lease, not the one of the service records
    assert ann.lease and ann.lease != lease_of(store, keys.service_key(db, "db-labels"))
    c.kill()
    wait_for(lambda: store.get(ann_key) is None and service(store, keys, db, "db-labels") is None,
             5, what="announce and record removed")


def test_malformed_announce_is_skipped(dclient: Any, containers: list[Any], store: EtcdStore,
                                       keys: KeyLayout, start_register: StartRegister) -> None:
    run(dclient, containers, hostname="web-bad", env=ENV)
    run(dclient, containers, hostname="web-good", env=ENV)
    reg = start_register()
    store.put(keys.announce_key(WEB, "web-bad"), "{not json")
    store.put(keys.announce_root + "internal/app1/dev/web", "{}")  # too short to be a key
    other = AnnounceRecord.for_path(WEB, "web-good", 80, "HTTP").to_json()
    store.put(keys.announce_key(WEB, "web-bad2"), other)  # ID differs from the key's
    put_announce(store, keys, WEB, "web-good")
    wait_for(lambda: service(store, keys, WEB, "web-good"), 10, what="good record")
    reg.wait_log("malformed key=", count=3)
    assert service(store, keys, WEB, "web-bad") is None
    _, kvs = store.get_prefix(keys.services_root)
    assert [kv.key for kv in kvs] == [keys.service_key(WEB, "web-good")]
    put_announce(store, keys, WEB, "web-good2")
    reg.wait_log("register key=", count=2)
    assert reg.log().count("malformed key=") == 3


def test_two_hosts_keep_to_their_own(dclient: Any, containers: list[Any], store: EtcdStore,
                                     keys: KeyLayout, start_register: StartRegister) -> None:
    """Two registers, two host ids, one etcd: each writes and cleans only its own records.

    Both see the same Docker daemon here, so "host B" is told apart by what it can
    map: it runs --internal on a network of its own, where only web-b lives (and
    web-b publishes no port, so host A cannot map it).
    """
    net = dclient.networks.create("buoy-test-net-b", labels={"buoy.test": "1"})
    try:
        run(dclient, containers, hostname="web-a", env=ENV)
        web_b = run(dclient, containers, hostname="web-b", env=ENV, publish=False)
        net.connect(web_b)
        web_b.reload()
        ip_b = web_b.attrs["NetworkSettings"]["Networks"]["buoy-test-net-b"]["IPAddress"]
        other = AnnouncePath.parse("/internal/app1/dev/other")
        stale = ServiceRecord.from_announce(
            AnnounceRecord.for_path(other, "web-gone", 80, "HTTP"), ip="10.9.8.7",
            ext_port=31001, host="host-a")
        store.put(keys.service_key(other, "web-gone"), stale.to_json())
        put_announce(store, keys, WEB, "web-a")
        put_announce(store, keys, WEB, "web-b")
        reg_a = start_register("--resync", "1")
        reg_b = start_register("--resync", "1", "--internal", "--network", "buoy-test-net-b",
                               host_id="host-b")
        rec_a = wait_for(lambda: service(store, keys, WEB, "web-a"), 10, what="host A record")
        rec_b = wait_for(lambda: service(store, keys, WEB, "web-b"), 10, what="host B record")
        assert (rec_a.host, rec_a.ip) == ("host-a", "127.0.0.1")
        assert (rec_b.host, rec_b.ip, rec_b.ext_port) == ("host-b", ip_b, 80)
        wait_for(lambda: service(store, keys, other, "web-gone") is None, 10,
                 what="host A's stale record deleted")
        reg_a.wait_log("reconcile done", count=3, timeout=15)
        reg_b.wait_log("reconcile done", count=3, timeout=15)
        assert service(store, keys, WEB, "web-a") == rec_a
        assert service(store, keys, WEB, "web-b") == rec_b
        # Different leases: stopping B with --deregister-on-exit would not touch A.
        assert lease_of(store, keys.service_key(WEB, "web-a")) != lease_of(
            store, keys.service_key(WEB, "web-b"))
    finally:
        for c in list(containers):
            c.remove(force=True)
        containers.clear()
        net.remove()


def test_register_restart_has_no_gap(dclient: Any, containers: list[Any], store: EtcdStore,
                                     keys: KeyLayout, start_register: StartRegister) -> None:
    run(dclient, containers, hostname="web-keep", env=ENV)
    doomed = run(dclient, containers, hostname="web-doomed", env=ENV)
    first = start_register("--ttl", "4", "--resync", "600")
    put_announce(store, keys, WEB, "web-keep")
    put_announce(store, keys, WEB, "web-doomed")
    key = keys.service_key(WEB, "web-keep")
    wait_for(lambda: service(store, keys, WEB, "web-doomed"), 10, what="doomed record")
    old_lease = wait_for(lambda: lease_of(store, key), 10, what="record")
    with GapWatch(store, key) as gaps:
        assert first.terminate() == 0  # SIGTERM: exit without revoking
        assert store.get(key) is not None
        doomed.kill()  # dies while no register runs: its record is stale at the next start
        second = start_register("--ttl", "4", "--resync", "600")
        wait_for(lambda: lease_of(store, key) not in (None, old_lease), 10, what="adopted")
        # Keep watching until the old lease (TTL 4 s) has surely expired.
        wait_for(lambda: store.lease_ttl(old_lease) < 0, 10, what="old lease expired")
    assert gaps.misses == 0 and gaps.reads > 50
    assert service(store, keys, WEB, "web-doomed") is None
    assert "reconcile delete stale key=" in second.log()
    second_lease = lease_of(store, key)
    # --deregister-on-exit revokes: the records go at once.
    assert second.terminate() == 0
    third = start_register("--ttl", "60", "--deregister-on-exit")
    wait_for(lambda: lease_of(store, key) not in (None, second_lease), 10, what="third adopts")
    assert third.terminate() == 0
    assert store.get(key) is None
    assert store.get(keys.skydns_key(instance_name(WEB, "web-keep"))) is None


@pytest.fixture
def private_dockerd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateDockerd]:
    daemon = PrivateDockerd(Path(tmp_path_factory.mktemp("dockerd"))).start()
    yield daemon
    daemon.destroy()


def test_survives_docker_daemon_restart(private_dockerd: PrivateDockerd, store: EtcdStore,
                                        keys: KeyLayout, start_register: StartRegister) -> None:
    """A dockerd restart kills its containers; register follows them down and back up."""
    client = private_dockerd.client()
    try:
        ensure_image(client)
        back = client.containers.run(
            "buoy-test-busybox:latest", ["/bin/busybox", "httpd", "-f", "-p", "80", "-h", "/www"],
            detach=True, hostname="web-back", environment=ENV, labels={"buoy.test": "1"},
            ports={"80/tcp": ("127.0.0.1", None)}, restart_policy={"Name": "always"})
        run_httpd(client, hostname="web-gone", env=ENV)
        reg = start_register("--ttl", "60", "--resync", "600", "--docker-host", private_dockerd.url)
        put_announce(store, keys, WEB, "web-back")
        put_announce(store, keys, WEB, "web-gone")
        wait_for(lambda: service(store, keys, WEB, "web-back"), 10, what="record")
        wait_for(lambda: service(store, keys, WEB, "web-gone"), 10, what="record")
        private_dockerd.restart()
        # web-back restarts by its policy (maybe on a new port), web-gone stays dead.
        wait_for(lambda: back.reload() or back.status == "running", 30, what="restarted")
        port = published_port(back)
        wait_for(lambda: (r := service(store, keys, WEB, "web-back")) and r.ext_port == port,
                 15, what="record of the restarted container")
        wait_for(lambda: service(store, keys, WEB, "web-gone") is None, 15, what="gone removed")
        reg.wait_log("docker events subscribed connects=2")
        assert reg.proc is not None and reg.proc.poll() is None
        # And events flow again after the restart: a kill removes at once.
        back.update(restart_policy={"Name": "no"})
        back.kill()
        wait_for(lambda: service(store, keys, WEB, "web-back") is None, 5, what="removed")
    finally:
        client.close()


class GapWatch:
    """Reads `key` every 20 ms on a thread and counts the reads that found nothing."""

    def __init__(self, store: EtcdStore, key: str) -> None:
        self.store, self.key = store, key
        self.misses = self.reads = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            self.reads += 1
            if self.store.get(self.key) is None:
                self.misses += 1

    def __enter__(self) -> GapWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
