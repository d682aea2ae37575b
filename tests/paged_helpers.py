"""Large prefixes for the paging tests: filled fast with transactions, read with gRPC's
default 4 MiB receive limit so that only paging can make them fit."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlparse

import etcd3
import pytest
from conftest import store_for
from etcd_server import EtcdServer

from buoy.etcd import paging as store_paging
from buoy.etcd.store import EtcdStore

GRPC_DEFAULT_LIMIT = 4 << 20
TXN_OPS = 128  # etcd's default --max-txn-ops
TXN_BYTES = 1 << 20  # under etcd's default --max-request-bytes (1.5 MiB)


def fill(server: EtcdServer, items: Iterable[tuple[str, str | bytes]]) -> int:
    """Put every (key, value) with transactions of 128 puts from a few threads; the total
    bytes of keys and values."""
    url = urlparse(server.endpoint)
    client = etcd3.client(host=url.hostname, port=url.port)
    batches: list[list[tuple[str, str | bytes]]] = [[]]
    total = batch_bytes = 0
    for key, value in items:
        size = len(key) + len(value)
        if len(batches[-1]) == TXN_OPS or (batches[-1] and batch_bytes + size > TXN_BYTES):
            batches.append([])
            batch_bytes = 0
        batches[-1].append((key, value))
        batch_bytes += size
        total += size

    def put(batch: list[tuple[str, str | bytes]]) -> None:
        client.transaction(compare=[], success=[client.transactions.put(k, v) for k, v in batch],
                           failure=[])

    try:
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(put, batches))
    finally:
        client.close()
    return total


def big_items(prefix: str, count: int = 6000, size: int = 1000) -> Iterator[tuple[str, str]]:
    """`count` keys of `size`-byte values (6,000 of 1 KB: about 6 MB)."""
    for i in range(count):
        yield f"{prefix}/k{i:06d}", f"{i:06d}" + "v" * (size - 6)


@pytest.fixture
def small_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    """Stores connected from now on receive at most gRPC's default 4 MiB per message."""
    monkeypatch.setattr(store_paging, "MAX_RECEIVE_BYTES", GRPC_DEFAULT_LIMIT)


@pytest.fixture
def limited_store(small_limit: None, etcd: EtcdServer) -> Iterator[EtcdStore]:
    s = store_for(etcd, timeout=10)
    yield s
    s.close()


class PageCount:
    """Range requests made and the largest page received since `start`."""

    def __init__(self) -> None:
        self.requests = store_paging.STATS.requests
        store_paging.STATS.largest = 0

    @property
    def pages(self) -> int:
        return store_paging.STATS.requests - self.requests

    @property
    def largest(self) -> int:
        return store_paging.STATS.largest
