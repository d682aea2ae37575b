"""etcd restored from an older snapshot under a running register.

The snapshot still holds an instance whose container died since, and lacks one
started since. After the restore register deletes the stale record at once (a
watcher's new snapshot makes it reconcile) and the new instance is back as soon
as its announcer has put its announce back.
"""

from __future__ import annotations

import shutil
import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest
from conftest import store_for
from docker_helpers import (
    RegisterProcess,
    run_httpd,
)
from etcd_server import EtcdServer, wait_for

from buoy.etcd.keys import KeyLayout
from buoy.etcd.lease import LeaseKeeper
from buoy.etcd.records import AnnouncePath, AnnounceRecord
from buoy.etcd.store import EtcdStore, StoreUnavailable

pytestmark = pytest.mark.docker

WEB = AnnouncePath.parse("/internal/app1/dev/web")
ENV = {"ANNOUNCE_PATH": str(WEB), "PORT": "80"}


def announcer(store: EtcdStore, keys: KeyLayout, instance_id: str,
              stop: threading.Event) -> LeaseKeeper:
    """What `buoy announce` does in a container: one lease, one announce key."""
    keeper = LeaseKeeper(store, 15, stop, interval=1.0, name=f"announce-{instance_id}")
    keeper.set(keys.announce_key(WEB, instance_id),
               AnnounceRecord.for_path(WEB, instance_id, 80, "HTTP").to_json())
    keeper.start()
    return keeper


def present(store: EtcdStore, key: str) -> bool | None:
    try:
        return store.get(key) is not None
    except StoreUnavailable:
        return None


def restore(server: EtcdServer, snapshot: Path) -> None:
    server.stop()
    shutil.rmtree(server.data_dir)
    subprocess.run(["etcdctl", "snapshot", "restore", str(snapshot), "--name", server.name,
                    "--data-dir", str(server.data_dir), "--initial-cluster",
                    f"{server.name}={server.peer_url}", "--initial-advertise-peer-urls",
                    server.peer_url], check=True, capture_output=True,
                   env={"ETCDCTL_API": "3", "PATH": "/usr/bin:/bin"})
    server.start()


def test_register_follows_an_etcd_restored_from_an_older_snapshot(
        own_etcd: EtcdServer, prefix: str, dclient: Any, tmp_path: Path) -> None:
    keys = KeyLayout(prefix)
    store = store_for(own_etcd)
    stop = threading.Event()
    old = run_httpd(dclient, hostname="web-old", env=ENV)
    reg = RegisterProcess(tmp_path / "buoy.register.log", own_etcd.endpoint, prefix, "--host-id",
                          "host-a", "--host-ip", "127.0.0.1", "--resync", "600").start()
    try:
        old_announcer = announcer(store, keys, "web-old", stop)
        wait_for(lambda: present(store, keys.service_key(WEB, "web-old")), 20, what="old record")
        snapshot = tmp_path / "etcd.snapshot"
        subprocess.run(["etcdctl", "--endpoints", own_etcd.endpoint, "snapshot", "save",
                        str(snapshot)], check=True, capture_output=True,
                       env={"ETCDCTL_API": "3", "PATH": "/usr/bin:/bin"})
        # after the snapshot: web-old goes, web-new comes
        old_announcer.revoke()
        old.kill()
        wait_for(lambda: present(store, keys.service_key(WEB, "web-old")) is False, 10,
                 what="old record withdrawn")
        run_httpd(dclient, hostname="web-new", env=ENV)
        announcer(store, keys, "web-new", stop)
        wait_for(lambda: present(store, keys.service_key(WEB, "web-new")), 10, what="new record")

        restore(own_etcd, snapshot)
        wait_for(lambda: present(store, keys.service_key(WEB, "web-new")), 15,
                 what="new record back on the restored etcd")
        wait_for(lambda: present(store, keys.service_key(WEB, "web-old")) is False, 15,
                 what="the restored stale record deleted")
        wait_for(lambda: " WARNING buoy.etcd.watch " in reg.log() and "etcd was replaced" in reg.log(),
                 10, what="the WARNING")
        assert "behind" in reg.log() or "differ" in reg.log()
        assert reg.proc is not None and reg.proc.poll() is None
    finally:
        stop.set()
        reg.kill()
        store.close()
