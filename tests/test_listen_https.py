"""listen's HTTPS frontend: certificates from --cert-dir and /certs in etcd served by SNI,
bad ones skipped, a renewal swapped under load with no reload, HTTP → HTTPS redirects and
HSTS. Real etcd, HAProxy and backends."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from acme_helpers import LocalCA, https_get, served_names, served_serial
from etcd_server import EtcdServer, free_port, wait_for
from listen_helpers import NamedHTTP, RunningListener, get, put_service, start_listener

from buoy.etcd.keys import KeyLayout
from buoy.etcd.store import EtcdStore
from buoy.ops.health import report

LISTEN = "/services/internal/app1/dev"


@pytest.fixture
def web() -> Iterator[NamedHTTP]:
    b = NamedHTTP("web")
    yield b
    b.close()


@pytest.fixture(scope="module")
def ca() -> LocalCA:
    return LocalCA()


def https_options(**extra: Any) -> dict[str, Any]:
    port = free_port()
    return {"https_bind": f"127.0.0.1:{port}", "https_port": port, **extra}


def problems(r: RunningListener) -> list[str]:
    state = report(r.listener.health.state(), time.time())[1]
    return [p for p in state["problems"] if not p.startswith("etcd")]


def route(store: EtcdStore, keys: KeyLayout, web: NamedHTTP, host: str, iid: str,
          **extra: Any) -> None:
    put_service(store, keys, f"/internal/app1/dev/web/{host}", iid, web.port, **extra)


def test_certificates_from_dir_and_etcd_by_sni(etcd: EtcdServer, store: EtcdStore,
                                               keys: KeyLayout, tmp_path: Path, ca: LocalCA,
                                               web: NamedHTTP,
                                               running: list[RunningListener]) -> None:
    cafile = str(ca.write(tmp_path / "ca.pem"))
    certs = tmp_path / "certs"
    certs.mkdir()
    (certs / "ghost.example.pem").write_text(ca.bundle("ghost.example"))  # a blank line inside
    (certs / "broken.example.pem").write_text("not a certificate")
    store.put(keys.cert_key("shop.example"), ca.record("shop.example", "www.shop.example"))
    chain, _ = ca.issue("bad.example")
    _, other_key = ca.issue("bad.example")
    store.put(keys.cert_key("bad.example"), json.dumps({"cert": chain, "key": other_key}))
    store.put(keys.cert_key("wrong.example"), ca.record("right.example"))
    for i, host in enumerate(("ghost.example", "shop.example", "bad.example")):
        route(store, keys, web, host, f"i{i}")
    r = start_listener(etcd, keys, tmp_path / "state", running, [LISTEN],
                       **https_options(cert_dir=certs))
    port = r.config.https_port
    wait_for(lambda: served_names(port, "shop.example") == {"shop.example", "www.shop.example"},
             what="etcd certificate served", timeout=30)
    assert served_names(port, "ghost.example") == {"ghost.example"}
    assert served_names(port, "unknown.example") == {"buoy.invalid"}  # the self-signed default
    assert served_names(port, "bad.example") == {"buoy.invalid"}  # skipped: key mismatch
    assert served_names(port, "right.example") == {"buoy.invalid"}  # skipped: names
    status, body, _ = https_get(port, "ghost.example", cafile)
    assert (status, body) == (200, "web")
    assert https_get(port, "shop.example", cafile)[:2] == (200, "web")

    found = problems(r)
    assert any("bad.example" in p and "does not match" in p for p in found), found
    assert any("wrong.example" in p and "do not cover" in p for p in found), found
    assert any("broken.example.pem" in p for p in found), found
    rows = {(c.vhost, c.source): c for c in r.listener.certificates()}
    assert rows[("ghost.example", "dir")].not_after is not None
    assert rows[("shop.example", "etcd")].error is None
    assert rows[("*", "default")].not_after is not None
    assert rows[("bad.example", "etcd")].error is not None
    metrics = {m.name: m.value for m in r.listener.health.metrics()}
    assert metrics["listen_certificates"] == 2
    assert metrics["listen_certificates_skipped"] == 3
    assert 0 < metrics["listen_certificate_expiry_seconds"] <= 10 * 86400
    reloads = r.reloads()

    # removed from etcd: the default again, and from disk too; a new one: no reload
    store.delete(keys.cert_key("shop.example"))
    wait_for(lambda: served_names(port, "shop.example") == {"buoy.invalid"}, what="removal", timeout=30)
    store.put(keys.cert_key("new.example"), ca.record("new.example"))
    wait_for(lambda: served_names(port, "new.example") == {"new.example"}, what="new cert", timeout=30)
    crt_list = r.config.tls_dir / "crt-list.txt"  # written once HAProxy took the change
    wait_for(lambda: "new.example" in crt_list.read_text(), what="crt-list on disk", timeout=30)
    assert "shop.example" not in crt_list.read_text()
    assert not (r.config.tls_dir / "shop.example.pem").exists()
    assert r.reloads() == reloads

    # a restarted listen (and HAProxy) serves them from disk before etcd says anything
    r.stop()
    running.remove(r)
    r2 = start_listener(etcd, keys, tmp_path / "state", running, [LISTEN],
                        **https_options(cert_dir=certs))
    assert served_names(r2.config.https_port, "new.example") == {"new.example"}
    assert served_names(r2.config.https_port, "ghost.example") == {"ghost.example"}


def test_renewal_swapped_under_requests_without_reload(etcd: EtcdServer, store: EtcdStore,
                                                       keys: KeyLayout, tmp_path: Path,
                                                       ca: LocalCA, web: NamedHTTP,
                                                       running: list[RunningListener]) -> None:
    cafile = str(ca.write(tmp_path / "ca.pem"))
    route(store, keys, web, "ghost.example", "i1")
    store.put(keys.cert_key("ghost.example"), ca.record("ghost.example"))
    r = start_listener(etcd, keys, tmp_path / "state", running, [LISTEN], **https_options())
    port = r.config.https_port
    wait_for(lambda: served_names(port, "ghost.example") == {"ghost.example"}, what="cert", timeout=30)
    first = wait_for(lambda: served_serial(port, "ghost.example"), what="serial", timeout=30)
    reloads = r.reloads()

    # a transaction left pending (as by a listen killed mid-change) neither takes the next
    # renewal into it nor blocks it
    https = r.listener.https
    assert https is not None
    sock, path = r.listener.haproxy.sock, https.paths.cert("ghost.example")
    stale = "\n".join(ln for ln in ca.bundle("ghost.example").splitlines() if ln.strip())
    assert "Transaction created" in sock.command(f"@1 set ssl cert {path} <<\n{stale}\n")
    assert "# transaction" in sock.command("@1 show ssl cert")
    store.put(keys.cert_key("ghost.example"), ca.record("ghost.example"))
    wait_for(lambda: served_serial(port, "ghost.example") not in (first, None), what="renewed", timeout=30)
    assert "# transaction" not in sock.command("@1 show ssl cert")
    assert "Transaction created" in sock.command(f"@1 set ssl cert {path} <<\n{stale}\n")
    https.driver.abort_stale()
    assert "# transaction" not in sock.command("@1 show ssl cert")
    results: list[tuple[int, str]] = []
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            try:
                results.append(https_get(port, "ghost.example", cafile)[:2])
            except OSError as exc:
                results.append((0, str(exc)))

    t = threading.Thread(target=loop, daemon=True)
    t.start()
    wait_for(lambda: len(results) > 20, what="requests before the renewal", timeout=30)
    renewals = 3
    for _ in range(renewals):
        before = wait_for(lambda: served_serial(port, "ghost.example"), what="serial", timeout=30)
        store.put(keys.cert_key("ghost.example"), ca.record("ghost.example"))
        wait_for(lambda b=before: served_serial(port, "ghost.example") not in (b, None),
                 what="renewed cert served", timeout=30)
    n = len(results)
    wait_for(lambda: len(results) > n + 20, what="requests after the renewals", timeout=30)
    stop.set()
    t.join(10)
    failed = [x for x in results if x != (200, "web")]
    assert not failed, failed[:5]
    assert served_serial(port, "ghost.example") != first
    assert r.reloads() == reloads


def test_redirect_and_hsts_follow_the_records(etcd: EtcdServer, store: EtcdStore,
                                              keys: KeyLayout, tmp_path: Path, ca: LocalCA,
                                              web: NamedHTTP,
                                              running: list[RunningListener]) -> None:
    cafile = str(ca.write(tmp_path / "ca.pem"))
    store.put(keys.cert_key("ghost.example"), ca.record("ghost.example"))
    route(store, keys, web, "ghost.example", "i1")
    route(store, keys, web, "plain.example", "i2")
    r = start_listener(etcd, keys, tmp_path / "state", running, [LISTEN], **https_options())
    port, http_port = r.config.https_port, r.http_port
    wait_for(lambda: served_names(port, "ghost.example") == {"ghost.example"}, what="cert", timeout=30)
    assert get(http_port, "ghost.example") == (200, "web")
    assert "strict-transport-security" not in https_get(port, "ghost.example", cafile)[2]
    reloads = r.reloads()

    route(store, keys, web, "ghost.example", "i1", https_redirect=True, hsts=600)
    wait_for(lambda: get(http_port, "ghost.example")[0] == 301, what="redirect", timeout=30)
    headers = https_get(port, "ghost.example", cafile)[2]
    assert headers["strict-transport-security"] == "max-age=600"
    assert get(http_port, "plain.example") == (200, "web")  # only the host that asked
    assert r.reloads() == reloads
    assert "ghost.example 1" in (r.config.tls_dir / "redirect.map").read_text()

    import http.client
    conn = http.client.HTTPConnection("127.0.0.1", http_port, timeout=5)
    conn.request("GET", "/a/b?c=1", headers={"Host": "ghost.example"})
    resp = conn.getresponse()
    assert resp.getheader("location") == f"https://ghost.example:{port}/a/b?c=1"
    conn.close()

    route(store, keys, web, "ghost.example", "i1")  # both off again
    wait_for(lambda: get(http_port, "ghost.example") == (200, "web"), what="redirect off", timeout=30)
    assert "strict-transport-security" not in https_get(port, "ghost.example", cafile)[2]
    assert r.reloads() == reloads


# pure parts ---------------------------------------------------------------------------------

def test_bundle_checks(ca: LocalCA) -> None:
    from buoy.listen.certs import CertError, covers, parse_bundle, parse_record, renewal_due

    b = parse_bundle("Ghost.Example", ca.bundle("ghost.example"), "dir")
    assert b.vhost == "ghost.example" and "\n\n" not in b.pem
    assert b.pem.count("BEGIN CERTIFICATE") == 2 and "PRIVATE KEY" in b.pem
    wild = parse_bundle("a.shop.example", ca.bundle("*.shop.example"), "dir")
    assert wild.vhost == "a.shop.example"
    assert covers({"*.shop.example"}, "a.shop.example")
    assert not covers({"*.shop.example"}, "a.b.shop.example")
    assert not covers({"*.shop.example"}, "shop.example")
    chain, _ = ca.issue("ghost.example")
    _, key = ca.issue("ghost.example")
    for vhost, text, words in (
            ("ghost.example", chain + key, "does not match"),
            ("other.example", ca.bundle("ghost.example"), "do not cover"),
            ("ghost.example", chain, "one private key"),
            ("ghost.example", "junk", "no certificate"),
            ("bad host!", ca.bundle("ghost.example"), "vhost")):
        with pytest.raises(CertError, match=words):
            parse_bundle(vhost, text, "etcd")
    with pytest.raises(CertError, match="cert"):
        parse_record("ghost.example", json.dumps({"cert": chain}))
    assert parse_record("ghost.example", ca.bundle("ghost.example")).source == "etcd"
    rec = json.loads(ca.record("ghost.example")) | {"source": "acme"}
    fresh = parse_record("ghost.example", json.dumps(rec))
    assert fresh.source == "acme" and not renewal_due(fresh, time.time())
    old = parse_bundle("ghost.example", ca.bundle("ghost.example", days=10, age=7), "etcd")
    assert renewal_due(old, time.time())


def test_policy_from_records_and_labels() -> None:
    from buoy.etcd.records import AnnounceRecord, RecordError
    from buoy.listen.config import ListenConfig
    from buoy.listen.groups import build_group
    from buoy.listen.https import acme_hosts, policy_maps
    from buoy.listen.model import Routing
    from buoy.register.mapping import ContainerInfo, label_announce

    base = {"ID": "a", "APP": "app1", "ENV": "dev", "SERVICE": "web", "PORT": 80, "TYPE": "HTTP"}
    rec = AnnounceRecord.from_dict(base | {"HTTPS_REDIRECT": True, "HSTS": 300, "ACME": True})
    assert (rec.https_redirect, rec.hsts, rec.acme) == (True, 300, True)
    assert AnnounceRecord.from_json(rec.to_json()) == rec
    assert "HSTS" not in AnnounceRecord.from_dict(base).to_dict()
    for field, bad in (("HTTPS_REDIRECT", "yes"), ("HSTS", -1), ("HSTS", True), ("ACME", 1),
                       ("HSTS", 10 ** 9)):
        with pytest.raises(RecordError, match=field):
            AnnounceRecord.from_dict(base | {field: bad})

    c = ContainerInfo(id="f" * 64, name="web", hostname="web1", labels={
        "buoy.path": "/internal/app1/dev/web/ghost.example", "buoy.port": "80",
        "buoy.type": "http", "buoy.https_redirect": "true", "buoy.hsts": "600",
        "buoy.acme": "yes"})
    made = label_announce(c)
    assert isinstance(made, tuple)
    assert (made[1].https_redirect, made[1].hsts, made[1].acme) == (True, 600, True)
    bad = label_announce(ContainerInfo(id="f" * 64, name="web", hostname="web1",
                                       labels={**c.labels, "buoy.hsts": "1y"}))
    assert not isinstance(bad, tuple) and bad is not None and "buoy.hsts" in bad.reason

    from buoy.etcd.records import AnnouncePath, ServiceRecord
    path = AnnouncePath.parse("/internal/app1/dev/web/ghost.example")
    srec = ServiceRecord.from_announce(made[1], ip="127.0.0.1", ext_port=8080, host="h")
    plain = ServiceRecord.from_announce(AnnounceRecord.for_path(
        AnnouncePath.parse("/internal/app1/dev/api/plain.example"), "b", 80, "HTTP"),
        ip="127.0.0.1", ext_port=8081, host="h")
    g1 = build_group([(path, srec)], "http", "")
    g2 = build_group([(AnnouncePath.parse("/internal/app1/dev/api/plain.example"), plain)],
                     "http", "")
    routing = Routing(backends=(g1.backend, g2.backend))
    assert policy_maps(routing) == ({"ghost.example": "1"}, {"ghost.example": "600"})
    cfg = ListenConfig(watch_prefixes=("/services/",), https_bind="*:443")
    assert acme_hosts(routing, cfg) == {"ghost.example"}
    assert acme_hosts(routing, ListenConfig(watch_prefixes=("/",), acme_all=True)) == {
        "ghost.example", "plain.example"}
    assert acme_hosts(routing, ListenConfig(watch_prefixes=("/",),
                                            acme_hosts=("plain.example", "x.example"))) == {
        "ghost.example", "plain.example"}


def test_cli_checks_https_settings_and_renders_the_frontend(etcd: EtcdServer, keys: KeyLayout,
                                                            tmp_path: Path) -> None:
    import subprocess
    import sys

    def listen(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "buoy", "listen", "--listen-path", LISTEN,
                               "--etcd-endpoints", etcd.endpoint, "--prefix", keys.prefix,
                               "--state-dir", str(tmp_path / "state"), *args],
                              capture_output=True, text=True, timeout=60)

    bad_pem = tmp_path / "bad.pem"
    bad_pem.write_text("junk")
    for args, name in ((["--cert-dir", str(tmp_path)], "--cert-dir"),
                       (["--https-bind", "127.0.0.1:x"], "BUOY_HTTPS_BIND"),
                       (["--https-bind", "127.0.0.1:80", "--http-bind", "127.0.0.1:80"],
                        "BUOY_HTTPS_BIND"),
                       (["--https-bind", "127.0.0.1:8443", "--default-cert", str(bad_pem)],
                        "BUOY_DEFAULT_CERT"),
                       (["--https-bind", "127.0.0.1:8443", "--acme-all"], "--acme-all"),
                       (["--https-bind", "127.0.0.1:8443", "--acme-directory", "ftp://x"],
                        "BUOY_ACME_DIRECTORY")):
        out = listen("--once", "--dry-run", *args)
        assert out.returncode == 2 and name in out.stderr, (args, out.stderr)
    port = free_port()
    out = listen("--once", "--dry-run", "--http-bind", "127.0.0.1:8080",
                 "--https-bind", f"127.0.0.1:{port}")
    assert out.returncode == 0, out.stderr
    assert f"bind 127.0.0.1:{port} ssl crt " in out.stdout
    assert "use_backend buoy_acme if acme_challenge" in out.stdout
    assert f"https://%[var(txn.host)]:{port}%[capture.req.uri]" in out.stdout
    out = listen("--once", "--http-bind", "127.0.0.1:8080", "--https-bind", f"127.0.0.1:{port}")
    assert out.returncode == 0, out.stderr  # haproxy -c accepts it: every file it names exists
    assert (tmp_path / "state" / "tls" / "default.pem").is_file()
