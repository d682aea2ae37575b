"""Shared fixtures: a real etcd per test module, a fresh key prefix per test."""

from __future__ import annotations

import itertools
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from etcd_server import EtcdServer  # noqa: E402

from buoy.etcd.keys import KeyLayout  # noqa: E402
from buoy.etcd.settings import EtcdSettings  # noqa: E402
from buoy.etcd.store import EtcdStore  # noqa: E402

_counter = itertools.count()


@pytest.fixture(scope="module")
def etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdServer]:
    """A real etcd on free client and peer ports, shared by one test module."""
    server = EtcdServer(tmp_path_factory.mktemp("etcd") / "data").start()
    yield server
    server.stop()


@pytest.fixture
def own_etcd(tmp_path: Path) -> Iterator[EtcdServer]:
    """A real etcd for one test, which may kill and restart it."""
    server = EtcdServer(tmp_path / "etcd-data").start()
    yield server
    server.stop()


@pytest.fixture
def prefix() -> str:
    """A key prefix of this test's own."""
    return f"/t{next(_counter)}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def keys(prefix: str) -> KeyLayout:
    return KeyLayout(prefix)


def store_for(server: EtcdServer, timeout: float = 2.0) -> EtcdStore:
    return EtcdStore(EtcdSettings.from_strings(server.endpoint, timeout=timeout))


@pytest.fixture
def store(etcd: EtcdServer) -> Iterator[EtcdStore]:
    s = store_for(etcd)
    yield s
    s.close()


@pytest.fixture(scope="module")
def dclient() -> Iterator[Any]:
    """The local Docker engine with the test image; the test containers removed after."""
    from docker_helpers import docker_client, ensure_image, remove_test_containers

    client = docker_client()
    ensure_image(client)
    yield client
    remove_test_containers(client)
    client.close()


@pytest.fixture
def containers(dclient: Any) -> Iterator[list[Any]]:
    """Containers a test made, removed after it."""
    made: list[Any] = []
    yield made
    for c in made:
        try:
            c.remove(force=True)
        except Exception:  # noqa: BLE001 - already gone
            pass


@pytest.fixture
def running() -> Iterator[list[Any]]:
    """Listeners a test starts (listen_helpers.RunningListener), stopped after it."""
    started: list[Any] = []
    yield started
    for r in started:
        r.stop()
