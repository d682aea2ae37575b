"""listen starts on a /services prefix larger than gRPC's 4 MiB receive limit (the other
readers are in test_paged_readers.py): its store keeps gRPC's default limit, so only paging
can make the snapshot fit, and every instance is routed."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from etcd_server import EtcdServer, wait_for
from listen_helpers import NamedHTTP, RunningListener, get, start_listener
from paged_helpers import GRPC_DEFAULT_LIMIT, PageCount, fill, small_limit
from test_paged_readers import PAD, PATHS, instance_id

from buoy.etcd.keys import KeyLayout
from buoy.etcd.records import AnnounceRecord, ServiceRecord

__all__ = ["small_limit"]  # fixture


def test_listen_routes_a_prefix_larger_than_the_limit(etcd: EtcdServer, small_limit: None,
                                                      keys: KeyLayout, tmp_path: Path) -> None:
    """6,000 records of about 1 KB (100 services of 60 instances): all routed, the last
    service's instances answer, through pages each under the limit."""
    back = NamedHTTP("last")
    started: list[RunningListener] = []
    try:
        def records() -> Iterator[tuple[str, str]]:
            for i in range(6000):
                path = PATHS[i % len(PATHS)]
                # the last service's instances answer on a real backend, the others' ports
                # are closed
                port = back.port if path == PATHS[-1] else 1 + i % 1000
                record = ServiceRecord.from_announce(
                    AnnounceRecord.for_path(path, instance_id(i), 8000, "HTTP"),
                    ip="127.0.0.1", ext_port=port, host="h1")
                yield keys.service_key(path, instance_id(i)), json.dumps(
                    {**record.to_dict(), "NOTE": PAD})

        assert fill(etcd, records()) > 5 << 20
        count = PageCount()
        r = start_listener(etcd, keys, tmp_path / "state", started, ["/services/internal"])
        assert count.pages >= 6 and count.largest < GRPC_DEFAULT_LIMIT
        applied = r.listener.applier.applied
        assert applied is not None and len(applied.backends) == len(PATHS)
        assert sum(len(b.servers) for b in applied.backends) == 6000
        last = 5999
        wait_for(lambda: get(r.http_port, "svc9.dev.app9") == (200, "last"),
                 what="the last service routed")
        assert get(r.http_port, f"{instance_id(last)}.svc9.dev.app9") == (200, "last")
    finally:
        for r in started:
            r.stop()
        back.close()
