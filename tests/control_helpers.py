"""Helpers for the control-plane tests: an etcd recreated empty on the same ports."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from typing import TypeVar

from etcd_server import EtcdServer

from buoy.etcd.store import StoreUnavailable

T = TypeVar("T")


def recreate_empty(server: EtcdServer) -> None:
    """Stop etcd, delete its data directory and start a new, empty one on the same ports.

    The new member has the same name, peer URL and cluster token, so etcd gives it the
    same cluster id: only its history (revision 1, no keys, no leases) tells it apart.
    """
    server.stop()
    shutil.rmtree(server.data_dir, ignore_errors=True)
    server.start()


def retry(fn: Callable[[], T], timeout: float = 10.0) -> T:
    """Call `fn` until etcd answers (a client needs a moment after etcd restarted)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return fn()
        except StoreUnavailable:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
