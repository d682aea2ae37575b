"""Helpers for the control-plane tests: an etcd recreated empty on the same ports."""

from __future__ import annotations

import shutil

from etcd_server import EtcdServer


def recreate_empty(server: EtcdServer) -> None:
    """Stop etcd, delete its data directory and start a new, empty one on the same ports.

    The new member has the same name, peer URL and cluster token, so etcd gives it the
    same cluster id: only its history (revision 1, no keys, no leases) tells it apart.
    """
    server.stop()
    shutil.rmtree(server.data_dir, ignore_errors=True)
    server.start()
