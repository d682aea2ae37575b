"""ACME through listen against Debian's pebble: HTTP-01 validation reaches listen's HTTP
bind, one listener issues while another serves the same certificate, a certificate near
its end is renewed, and with the CA down the current one keeps serving and /healthz says
why. Real etcd, HAProxy, pebble."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from acme_helpers import LocalCA, Pebble, https_get, peer_cert, served_serial, start_pebble
from etcd_server import EtcdServer, free_port, wait_for
from listen_helpers import NamedHTTP, RunningListener, put_service, start_listener

from buoy.etcd.keys import KeyLayout
from buoy.etcd.store import EtcdStore
from buoy.listen.certs import Bundle, parse_record
from buoy.ops.health import report

LISTEN = "/services/internal/app1/dev"
HOST = "ghost.example"


@pytest.fixture(scope="module")
def http_port() -> int:
    """The HTTP port of the issuing listener, where pebble validates HTTP-01."""
    return free_port()


@pytest.fixture(scope="module")
def pebble(tmp_path_factory: pytest.TempPathFactory, http_port: int) -> Iterator[Pebble]:
    p = start_pebble(tmp_path_factory.mktemp("pebble"), http_port)
    yield p
    p.stop()


@pytest.fixture
def web() -> Iterator[NamedHTTP]:
    b = NamedHTTP("web")
    yield b
    b.close()


def listener(etcd: EtcdServer, keys: KeyLayout, state: Path, running: list[RunningListener],
             **options: Any) -> RunningListener:
    port = free_port()
    return start_listener(etcd, keys, state, running, [LISTEN], https_bind=f"127.0.0.1:{port}",
                          https_port=port, **options)


def issuer_of(port: int) -> str:
    try:
        return peer_cert(port, HOST).issuer.rfc4514_string()
    except OSError:
        return ""


def problems(r: RunningListener) -> list[str]:
    state = report(r.listener.health.state(), time.time())[1]
    return [p for p in state["problems"] if not p.startswith("etcd")]


def near_expiry(ca: LocalCA) -> str:
    """An ACME record with a tenth of its lifetime left (renewal is due below a third)."""
    chain, key = ca.issue(HOST, days=10, age=9)
    return json.dumps({"cert": chain, "key": key, "source": "acme"})


def test_issued_served_everywhere_and_renewed(etcd: EtcdServer, store: EtcdStore,
                                              keys: KeyLayout, tmp_path: Path, pebble: Pebble,
                                              http_port: int, web: NamedHTTP,
                                              running: list[RunningListener]) -> None:
    put_service(store, keys, f"/internal/app1/dev/web/{HOST}", "i1", web.port, acme=True,
                https_redirect=True)
    acme = {"acme_directory": pebble.directory, "acme_ca": Path(pebble.ca)}
    a = listener(etcd, keys, tmp_path / "a", running, http_port=http_port, listen_id="a", **acme)
    wait_for(lambda: "Pebble" in issuer_of(a.config.https_port), timeout=30,
             what="certificate issued through ACME and served")
    root = tmp_path / "pebble-root.pem"
    root.write_text(pebble.root_pem())
    assert https_get(a.config.https_port, HOST, str(root))[:2] == (200, "web")
    kv = store.get(keys.cert_key(HOST))
    assert kv is not None and json.loads(kv.value)["source"] == "acme"
    assert store.get(keys.acme_account_key) is not None
    assert a.listener.https is not None and a.listener.https.issuer is not None
    assert a.listener.https.issuer.leader
    assert not store.get_prefix(keys.acme_challenges_root)[1]  # answers withdrawn
    rows = {c.vhost: c for c in a.listener.certificates()}
    assert rows[HOST].source == "acme" and rows[HOST].not_after is not None

    # another listener, also able to issue, serves the same certificate without issuing
    b = listener(etcd, keys, tmp_path / "b", running, listen_id="b", **acme)
    serial = wait_for(lambda: served_serial(a.config.https_port, HOST), what="a's serial", timeout=30)
    wait_for(lambda: served_serial(b.config.https_port, HOST) == serial, what="b serves it", timeout=30)
    assert b.listener.https is not None and b.listener.https.issuer is not None
    assert not b.listener.https.issuer.leader and b.listener.https.issuer.issued == 0
    assert https_get(b.config.https_port, HOST, str(root))[:2] == (200, "web")

    # near its end: renewed by the lock holder, and both serve the new one
    ca = LocalCA()
    near = near_expiry(ca)
    store.put(keys.cert_key(HOST), near)

    def stored() -> Bundle | None:
        kv = store.get(keys.cert_key(HOST))
        got = parse_record(HOST, kv.value) if kv is not None else None
        return got if got and got.serial not in (serial, parse_record(HOST, near).serial) else None

    renewed = wait_for(stored, timeout=30, what="renewed through ACME")
    assert renewed.source == "acme" and a.listener.https.issuer.issued == 2
    for r in (a, b):
        wait_for(lambda r=r: served_serial(r.config.https_port, HOST) == renewed.serial,
                 what="the renewed certificate served", timeout=30)
    assert "Pebble" in issuer_of(b.config.https_port)
    assert b.listener.https.issuer.issued == 0
    assert not problems(a) and not problems(b)

    # the issuer stops: its lock goes with it and another listener takes over. The CA
    # validates on a third listener's HTTP port, which answers from etcd whoever issues.
    a.stop()
    running.remove(a)
    c = listener(etcd, keys, tmp_path / "c", running, http_port=http_port, listen_id="c", **acme)
    assert c.listener.https is not None and c.listener.https.issuer is not None
    issuers = {"b": b.listener.https.issuer, "c": c.listener.https.issuer}
    wait_for(lambda: any(i.leader for i in issuers.values()), what="another issuer", timeout=30)
    store.put(keys.cert_key(HOST), near_expiry(ca))
    wait_for(lambda: sum(i.issued for i in issuers.values()) == 1, timeout=30,
             what="renewed by the new issuer")
    lead = b if issuers["b"].leader else c
    assert lead.listener.https is not None and lead.listener.https.issuer is not None
    wait_for(lambda: "Pebble" in issuer_of(c.config.https_port), what="c serves the renewal", timeout=30)
    kv = store.get(keys.acme_lock_key)
    assert kv is not None and kv.value.decode() == ("b" if lead is b else "c")

    # the CA down: the current certificate keeps serving, /healthz names the failure
    pebble.stop()
    store.put(keys.cert_key(HOST), near_expiry(ca))
    wait_for(lambda: any(p.startswith(f"acme {HOST}:") for p in problems(lead)), timeout=30,
             what="the ACME failure in /healthz")
    wait_for(lambda: "buoy test CA" in issuer_of(lead.config.https_port),
             what="the current certificate served", timeout=30)
    assert lead.listener.https.issuer.attempts.failures[HOST] >= 1
    orders = {dict(m.labels)["result"]: m.value for m in lead.listener.health.metrics()
              if m.name == "listen_acme_orders_total"}
    assert orders["ok"] == 1 and orders["failed"] >= 1
    rows = [r for r in lead.listener.certificates() if r.vhost == HOST]
    assert len(rows) == 1 and rows[0].source == "acme" and rows[0].not_after is not None
    assert rows[0].error is not None and "Connection" in rows[0].error
