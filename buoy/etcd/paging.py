"""Paged prefix reads: a prefix of any size, every range response well under gRPC's limit.

A prefix is read in pages sorted by key: the first page fixes the revision (its
header's), and every following page asks for that same revision, continuing from
the last key of the page before + "\\0". The result is one consistent snapshot, as
if read in a single request, whatever its size.

A page holds at most `PAGE_KEYS` keys, and fewer when the keys seen so far are big:
the next page's key count is sized to `PAGE_BYTES` from the average size of the
previous page. If a page is still refused as too large for the client's receive
limit (RESOURCE_EXHAUSTED), it is asked again with a quarter of the keys, down to
one key. A page whose revision is compacted away mid-read restarts the read at the
current revision (only when the caller did not ask for a revision of its own).

Used by `buoy.etcd.store` only (the only place that talks gRPC to etcd).
"""

from __future__ import annotations

import logging
from typing import Any

import grpc
from etcd3 import etcdrpc, utils

log = logging.getLogger(__name__)

PAGE_KEYS = 1000
PAGE_BYTES = 1 << 20          # aim for about 1 MiB per range response
MAX_RECEIVE_BYTES = 64 << 20  # the channel's receive limit: a safety net, not the fix
RESTARTS = 5                  # reads restarted after a compaction in the middle


class PageStats:
    """Counts of range requests, for tests and debugging."""

    def __init__(self) -> None:
        self.requests = 0
        self.largest = 0  # bytes of the largest range response received


STATS = PageStats()


def read_prefix(client: Any, prefix: str, revision: int = 0) -> tuple[Any, list[Any]]:
    """(header of the first page, every raw KeyValue under `prefix`) at one revision.

    `revision` 0 reads at the current revision. gRPC errors propagate (after the
    client's own endpoint bookkeeping) for the caller to translate.
    """
    page_keys, page_bytes = PAGE_KEYS, PAGE_BYTES
    for attempt in range(RESTARTS if revision == 0 else 0):
        try:
            return _read(client, prefix, revision, page_keys, page_bytes)
        except _CompactedMidRead:
            log.info("read prefix=%s: revision compacted between pages, reading again "
                     "attempt=%d", prefix, attempt + 1)
    return _read(client, prefix, revision, page_keys, page_bytes, restartable=False)


class _CompactedMidRead(Exception):
    pass


def _read(client: Any, prefix: str, revision: int, page_keys: int, page_bytes: int,
          restartable: bool = True) -> tuple[Any, list[Any]]:
    start = utils.to_bytes(prefix)
    end = utils.prefix_range_end(start)
    header: Any = None
    kvs: list[Any] = []
    limit = page_keys
    while True:
        # No sort options: etcd returns keys in ascending order anyway, and with any sort
        # order set it drops the limit, reads the rest of the range and truncates it
        # (100,000 keys: 4.5 times the CPU; docs/scale.md).
        request = etcdrpc.RangeRequest(key=start, range_end=end, limit=limit, revision=revision)
        try:
            resp = client.kvstub.Range(request, client.timeout,
                                       credentials=client.call_credentials,
                                       metadata=client.metadata)
        except grpc.RpcError as exc:
            code = exc.code() if hasattr(exc, "code") else None
            if code == grpc.StatusCode.RESOURCE_EXHAUSTED and limit > 1:
                limit = max(1, limit // 4)
                log.info("read prefix=%s: page too large, asking %d keys", prefix, limit)
                continue
            details = str(exc.details()) if hasattr(exc, "details") else ""
            if (header is not None and restartable and code == grpc.StatusCode.OUT_OF_RANGE
                    and "compacted" in details):
                raise _CompactedMidRead() from None
            client._manage_grpc_errors(exc)  # fails the endpoint over; raises
            raise
        size = resp.ByteSize()
        STATS.requests += 1
        STATS.largest = max(STATS.largest, size)
        if header is None:
            header = resp.header
            revision = revision or resp.header.revision
        kvs.extend(resp.kvs)
        if not resp.more or not resp.kvs:
            return header, kvs
        start = resp.kvs[-1].key + b"\0"
        per_key = max(1, size // len(resp.kvs))
        limit = max(1, min(page_keys, page_bytes // per_key))
