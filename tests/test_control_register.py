"""register accounts for every container: owned keys put back, duplicates, host networking,
and its verdicts shown by `buoy ls`."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from docker_helpers import (
    IMAGE,
    TEST_LABEL,
    run_httpd,
)
from etcd_server import EtcdServer, free_port, wait_for
from register_fixtures import StartRegister, register_starter

from buoy.etcd.keys import KeyLayout
from buoy.etcd.records import AnnouncePath, AnnounceRecord, ServiceRecord
from buoy.etcd.store import EtcdStore

pytestmark = pytest.mark.docker

WEB = AnnouncePath.parse("/internal/app1/dev/web")
DB = AnnouncePath.parse("/internal/app1/dev/db")
ENV = {"ANNOUNCE_PATH": str(WEB), "PORT": "80"}
DB_LABELS = {"buoy.path": str(DB), "buoy.port": "80", "buoy.type": "TCP"}


@pytest.fixture
def start_register(tmp_path: Path, etcd: EtcdServer, prefix: str) -> Iterator[StartRegister]:
    yield from register_starter(tmp_path, etcd, prefix, "127.0.0.1")


def run(dclient: Any, made: list[Any], **kwargs: Any) -> Any:
    c = run_httpd(dclient, **kwargs)
    made.append(c)
    c.reload()
    return c


def announce(store: EtcdStore, keys: KeyLayout, path: AnnouncePath, instance_id: str,
             port: int = 80) -> None:
    store.put(keys.announce_key(path, instance_id),
              AnnounceRecord.for_path(path, instance_id, port, "HTTP").to_json())


def service(store: EtcdStore, keys: KeyLayout, path: AnnouncePath,
            instance_id: str) -> ServiceRecord | None:
    kv = store.get(keys.service_key(path, instance_id))
    return ServiceRecord.from_json(kv.value) if kv else None


def lease(store: EtcdStore, key: str) -> int | None:
    kv = store.get(key)
    return kv.lease if kv else None


def status(store: EtcdStore, keys: KeyLayout, path: AnnouncePath,
           instance_id: str) -> dict[str, str] | None:
    kv = store.get(keys.status_key(path, instance_id))
    return json.loads(kv.value) if kv else None


def test_label_announce_deleted_comes_back(dclient: Any, containers: list[Any], store: EtcdStore,
                                          keys: KeyLayout, start_register: StartRegister) -> None:
    reg = start_register("--resync", "3")
    run(dclient, containers, hostname="db-keep", labels=DB_LABELS)
    ann_key = keys.announce_key(DB, "db-keep")
    wait_for(lambda: service(store, keys, DB, "db-keep"), 10, what="label record")
    took = []
    for _ in range(3):  # `etcdctl del`, again and again
        store.delete(ann_key)
        started = time.monotonic()
        wait_for(lambda: store.get(ann_key) is not None, 4, what="label announce back")
        took.append(time.monotonic() - started)
    print(f"\nlabel announce back after {', '.join(f'{t:.2f}s' for t in took)}")
    wait_for(lambda: service(store, keys, DB, "db-keep"), 4, what="record still there")
    # a deleted service record and SkyDNS record of its own come back as well
    store.delete(keys.service_key(DB, "db-keep"))
    wait_for(lambda: service(store, keys, DB, "db-keep"), 4, what="service record back")
    assert "register-labels: put back 1 of 1 keys" in reg.log()


def test_second_register_on_the_host_exiting_deletes_nothing(
        dclient: Any, containers: list[Any], store: EtcdStore, keys: KeyLayout,
        start_register: StartRegister) -> None:
    run(dclient, containers, hostname="web-two", env=ENV)
    run(dclient, containers, hostname="db-two", labels=DB_LABELS)
    first = start_register("--resync", "600")
    announce(store, keys, WEB, "web-two")
    wait_for(lambda: service(store, keys, WEB, "web-two") and service(store, keys, DB, "db-two"),
             10, what="records of the first register")
    owned = (keys.announce_key(DB, "db-two"), keys.service_key(DB, "db-two"),
             keys.service_key(WEB, "web-two"))
    first_leases = {k: lease(store, k) for k in owned}
    second = start_register("--resync", "600", "--deregister-on-exit")
    # the second one wrote last: the keys are under its leases now
    wait_for(lambda: all(lease(store, k) not in (None, first_leases[k]) for k in owned), 10,
             what="keys under the second register's leases")
    assert second.terminate() == 0  # revokes its leases: those keys are deleted at once
    for key in owned:
        wait_for(lambda k=key: lease(store, k) == first_leases[k], 5, what=f"{key} put back")
    assert "put back" in first.log()
    assert first.proc is not None and first.proc.poll() is None


def test_duplicate_hostnames_are_refused_or_told_apart(
        dclient: Any, containers: list[Any], store: EtcdStore, keys: KeyLayout,
        start_register: StartRegister) -> None:
    twins = [run(dclient, containers, hostname="web-twin", env=ENV) for _ in range(2)]
    dbs = [run(dclient, containers, hostname="db-twin", labels=DB_LABELS) for _ in range(2)]
    reg = start_register()
    announce(store, keys, WEB, "web-twin")  # both agents would write this one key
    verdict = wait_for(lambda: status(store, keys, WEB, "web-twin"), 10, what="verdict")
    assert verdict["SUMMARY"] == "duplicate hostname" and verdict["HOST"] == "host-a"
    assert service(store, keys, WEB, "web-twin") is None
    warning = [ln for ln in reg.log().splitlines() if "names several running containers" in ln]
    assert len(warning) == 1 and " WARNING " in warning[0]
    assert all(c.name in warning[0] for c in twins)
    # label-only twins: register announces each under its short container ID
    for c in dbs:
        rec = wait_for(lambda c=c: service(store, keys, DB, c.id[:12]), 10, what="twin routed")
        assert rec.ext_port == int(c.attrs["NetworkSettings"]["Ports"]["80/tcp"][0]["HostPort"])
    # one twin goes: the other one is routed under the hostname
    twins[1].remove(force=True)
    wait_for(lambda: service(store, keys, WEB, "web-twin"), 10, what="the survivor routed")
    wait_for(lambda: status(store, keys, WEB, "web-twin") is None, 5, what="verdict withdrawn")


def test_host_network_container_is_routed(dclient: Any, containers: list[Any], store: EtcdStore,
                                          keys: KeyLayout, start_register: StartRegister) -> None:
    port = free_port()
    c = dclient.containers.run(
        IMAGE, ["/bin/busybox", "httpd", "-f", "-p", f"127.0.0.1:{port}", "-h", "/www"],
        detach=True, network_mode="host", stop_signal="SIGKILL",
        labels={TEST_LABEL: "1", "buoy.path": str(WEB), "buoy.port": str(port),
                "buoy.type": "HTTP"})
    containers.append(c)
    c.reload()
    instance_id = c.attrs["Config"]["Hostname"].lower()
    start_register()
    rec = wait_for(lambda: service(store, keys, WEB, instance_id), 10, what="host-net record")
    assert (rec.ip, rec.ext_port, rec.port) == ("127.0.0.1", port, port)
    with urllib.request.urlopen(f"http://{rec.ip}:{rec.ext_port}/", timeout=5) as resp:
        assert resp.read() == b"buoy test\n"


def ls(etcd: EtcdServer, prefix: str, *args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "buoy", "ls", "--etcd-endpoints", etcd.endpoint,
                           "--prefix", prefix, *args], capture_output=True, text=True,
                          timeout=30)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_ls_shows_why_each_announce_is_not_routed(
        dclient: Any, containers: list[Any], store: EtcdStore, keys: KeyLayout, etcd: EtcdServer,
        prefix: str, start_register: StartRegister) -> None:
    run(dclient, containers, hostname="web-ok", env=ENV)
    run(dclient, containers, hostname="web-hidden", env=ENV, publish=False)
    run(dclient, containers, hostname="web-spoof", env=ENV)
    run(dclient, containers, hostname="web-port", env=ENV)
    for _ in range(2):
        run(dclient, containers, hostname="web-dup", env=ENV)
    run(dclient, containers, hostname="web-bare")  # declares nothing about itself
    start_register()
    announce(store, keys, WEB, "web-ok")
    announce(store, keys, WEB, "web-hidden")
    announce(store, keys, DB, "web-spoof")
    announce(store, keys, WEB, "web-port", port=8080)
    announce(store, keys, WEB, "web-dup")
    announce(store, keys, WEB, "web-bare")
    announce(store, keys, WEB, "web-nowhere")
    expected = {
        "web-hidden": "port 80 not published",
        "web-spoof": "claims a path that is not its own",
        "web-port": "claims a port that is not its own",
        "web-dup": "duplicate hostname",
        "web-bare": "declares no ANNOUNCE_PATH/PORT or buoy.path/buoy.port",
        "web-nowhere": "not on any host",
    }
    wait_for(lambda: service(store, keys, WEB, "web-ok"), 10, what="routed one")
    wait_for(lambda: len(store.get_prefix(keys.status_root)[1]) == 5, 10, what="five verdicts")
    tree = ls(etcd, prefix)
    print(tree)
    lines = {ln.split()[0]: ln for ln in tree.splitlines() if ln.startswith("    web-")
             and ("routed" in ln or "ROUTED" in ln)}
    assert lines["web-ok"].endswith("routed")
    for instance_id, why in expected.items():
        assert f"NOT ROUTED: {why}" in lines[instance_id], lines[instance_id]
    assert "host host-a" in lines["web-hidden"] and "container " in lines["web-hidden"]
    data = json.loads(ls(etcd, prefix, "--json"))
    by_id = {e["id"]: e for entries in data["announce"].values() for e in entries}
    assert by_id["web-ok"]["routed"] is True
    assert by_id["web-hidden"]["status"]["SUMMARY"] == "port 80 not published"
    assert "not published" in by_id["web-hidden"]["status"]["REASON"]
