"""HAProxy failures: a reload HAProxy refuses keeps the last good config serving.

(An invalid user template is proven by test_listen.py's
test_invalid_template_keeps_old_config_serving.)
"""

from __future__ import annotations

import socket
from pathlib import Path

from conftest import store_for
from etcd_server import EtcdServer, free_port, wait_for
from listen_helpers import EchoTCP, NamedHTTP, RunningListener, answers, put_service, tcp_ask

from buoy.etcd.keys import KeyLayout
from buoy.etcd.store import EtcdStore


def test_failed_reload_keeps_last_good_config(etcd: EtcdServer, store: EtcdStore,
                                              keys: KeyLayout, tmp_path: Path) -> None:
    web, db = NamedHTTP("w1"), EchoTCP("db")
    squatter = socket.create_server(("127.0.0.1", free_port()))  # holds the port HAProxy wants
    taken = squatter.getsockname()[1]
    r = RunningListener(store_for(etcd), keys, tmp_path, ["/services/internal/app1/dev"])
    try:
        put_service(store, keys, "/internal/app1/dev/web", "w1", web.port)
        r.start()
        wait_for(lambda: answers(r.http_port, "web.dev.app1") == {"w1"}, what="w1 routed")
        good = (tmp_path / "haproxy.cfg").read_text()
        applied = r.listener.applier.stats.reloads
        # Valid config (`haproxy -c` passes), but the new worker cannot bind: the reload fails.
        put_service(store, keys, "/internal/app1/dev/db", "d1", db.port, port=taken, type_="TCP")
        wait_for(lambda: r.listener.applier.stats.reload_failures >= 1, timeout=20,
                 what="reload refused")
        assert (tmp_path / "haproxy.cfg").read_text() == good  # the previous file is back
        assert r.listener.applier.stats.reloads == applied  # not counted as applied
        assert answers(r.http_port, "web.dev.app1", 20) == {"w1"}  # still serving
        squatter.close()  # the port is free now: the next change applies it all
        put_service(store, keys, "/internal/app1/dev/web", "w1", web.port, weight=2)
        wait_for(lambda: tcp_ask(taken) == "db:hi", timeout=20, what="db routed after fix")
        assert answers(r.http_port, "web.dev.app1") == {"w1"}
    finally:
        r.stop()
        squatter.close()
        web.close()
        db.close()
