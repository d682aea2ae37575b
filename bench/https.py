"""Benchmark listen's HTTPS frontend against real etcd, HAProxy and Debian's pebble on
127.0.0.1: a virtual host asking for ACME → its certificate served over HTTPS (the order,
HTTP-01 validation through HAProxy, the etcd write and the runtime API install); a
`/certs` put → served; and failed HTTPS requests and reloads while certificates are
renewed under a request loop.

    python bench/https.py [--acme-runs 5] [--puts 20] [--renewals 10]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "bench")]

from acme_helpers import LocalCA, https_get, peer_cert, served_serial, start_pebble  # noqa: E402
from etcd_server import EtcdServer, free_port, wait_for  # noqa: E402
from listen_helpers import NamedHTTP, RunningListener, put_service  # noqa: E402
from report import summary, write_section  # noqa: E402

from buoy.etcd.keys import KeyLayout  # noqa: E402
from buoy.etcd.settings import EtcdSettings  # noqa: E402
from buoy.etcd.store import EtcdStore  # noqa: E402

LISTEN = "/services/internal/app1/dev"


def spread(values: list[float]) -> str:
    return summary(values, "ms") + (f", stdev {statistics.stdev(values):.1f}"
                                    if len(values) > 1 else "")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--acme-runs", type=int, default=5)
    ap.add_argument("--puts", type=int, default=20)
    ap.add_argument("--renewals", type=int, default=10)
    args = ap.parse_args()
    load = os.getloadavg()[0]
    tmp = Path(tempfile.mkdtemp(prefix="buoy-bench-https-"))
    etcd = EtcdServer(tmp / "etcd").start()
    web = NamedHTTP("web")
    http_port, https_port = free_port(), free_port()
    pebble = start_pebble(tmp / "pebble", http_port)
    keys = KeyLayout("/bench")
    store = EtcdStore(EtcdSettings.from_strings(etcd.endpoint))
    r = RunningListener(EtcdStore(EtcdSettings.from_strings(etcd.endpoint)), keys, tmp / "state",
                        [LISTEN], http_port=http_port, https_bind=f"127.0.0.1:{https_port}",
                        https_port=https_port, acme_directory=pebble.directory,
                        acme_ca=Path(pebble.ca))
    ca = LocalCA()
    cafile = str(ca.write(tmp / "ca.pem"))
    try:
        r.start()
        # 1. ACME: the service asks for a certificate → served over HTTPS
        acme_ms: list[float] = []
        for i in range(args.acme_runs):
            host = f"acme{i}.example"
            t0 = time.perf_counter()
            put_service(store, keys, f"/internal/app1/dev/web/{host}", f"a{i}", web.port, acme=True)
            wait_for(lambda h=host: "Pebble" in _issuer(https_port, h), timeout=60,
                     interval=0.005, what=f"{host} served")
            acme_ms.append((time.perf_counter() - t0) * 1000)
        root = tmp / "pebble-root.pem"
        root.write_text(pebble.root_pem())
        assert https_get(https_port, "acme0.example", str(root))[:2] == (200, "web")

        # 2. a /certs put → served over HTTPS
        put_service(store, keys, "/internal/app1/dev/web/ghost.example", "g1", web.port)
        put_ms: list[float] = []
        for _ in range(args.puts):
            before = wait_for(lambda: served_serial(https_port, "ghost.example"), what="serial")
            value = ca.record("ghost.example")
            t0 = time.perf_counter()
            store.put(keys.cert_key("ghost.example"), value)
            wait_for(lambda b=before: served_serial(https_port, "ghost.example") not in (b, None),
                     interval=0.002, what="renewed cert")
            put_ms.append((time.perf_counter() - t0) * 1000)

        # 3. renewals under a request loop (a new TLS connection per request)
        reloads = r.reloads()
        results: list[bool] = []
        stop = threading.Event()

        def loop() -> None:
            while not stop.is_set():
                try:
                    results.append(https_get(https_port, "ghost.example", cafile)[:2]
                                   == (200, "web"))
                except OSError:
                    results.append(False)

        t = threading.Thread(target=loop, daemon=True)
        t.start()
        wait_for(lambda: len(results) > 50, what="requests")
        started = time.perf_counter()
        for _ in range(args.renewals):
            before = wait_for(lambda: served_serial(https_port, "ghost.example"), what="serial")
            store.put(keys.cert_key("ghost.example"), ca.record("ghost.example"))
            wait_for(lambda b=before: served_serial(https_port, "ghost.example") not in (b, None),
                     what="renewed under load")
            time.sleep(0.2)
        loop_s = time.perf_counter() - started
        stop.set()
        t.join(10)
        failed = results.count(False)
        reload_delta = r.reloads() - reloads
    finally:
        r.stop()
        pebble.stop()
        web.close()
        etcd.stop()

    rows = [
        ("service announced with `ACME: true` → its certificate served over HTTPS (order, "
         "validation, finalize, `/certs` write, runtime API install)", spread(acme_ms)),
        ("`/certs/<vhost>` put → the new certificate served (watch, checks, "
         "`set`/`commit ssl cert`)", spread(put_ms)),
        ("renewals under a request loop (a new verified TLS connection per request)",
         f"{args.renewals} renewals in {loop_s:.1f} s, {len(results)} requests, "
         f"**{failed} failed**, {reload_delta} reloads"),
    ]
    table = "\n".join(f"| {what} | {figure} |" for what, figure in rows)
    body = f"""## HTTPS

listen with `--https-bind` and `--acme-directory` against Debian's pebble
(`PEBBLE_VA_NOSLEEP=1`, HTTP-01 validated through HAProxy's HTTP frontend to listen's
responder), real etcd and HAProxy, all on 127.0.0.1. Load average at the start: {load:.2f}.

| measure | figure |
|---|---|
{table}

Most of the ACME time is the `acme` library's polling (one second between looks at the
order); pebble itself validates at once with `PEBBLE_VA_NOSLEEP`.
"""
    write_section("https", body)
    print(body)
    return 0 if failed == 0 and reload_delta == 0 else 1


def _issuer(port: int, host: str) -> str:
    try:
        return peer_cert(port, host).issuer.rfc4514_string()
    except OSError:
        return ""


if __name__ == "__main__":
    sys.exit(main())
