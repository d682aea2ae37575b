"""Benchmark listen's status page against real etcd and HAProxy on 127.0.0.1: what a page
costs at 1,000 and 10,000 instances (fetch time of `/` and `/status.json`, page size,
listen's CPU with pages open) and whether it disturbs routing (one membership change
put → routable, with and without pages open).

    python bench/status_page.py [--sizes 1000,10000] [--samples 20] [--tabs 10]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "bench")]

from etcd_server import EtcdServer, free_port, wait_for  # noqa: E402
from listen_helpers import NamedHTTP, get, put_service  # noqa: E402
from report import summary, write_section  # noqa: E402

from buoy.etcd.keys import KeyLayout  # noqa: E402
from buoy.etcd.settings import EtcdSettings  # noqa: E402
from buoy.etcd.store import EtcdStore  # noqa: E402

LISTEN = "/services/internal/app1/dev"
PER_SERVICE = 10
CPU_WINDOW = 20.0  # seconds listen's CPU is measured over, with pages open and without


def fetch(url: str) -> tuple[float, int]:
    """ms to fetch `url` whole, and its size."""
    t0 = time.monotonic()
    with urllib.request.urlopen(url, timeout=30) as resp:
        size = len(resp.read())
    return (time.monotonic() - t0) * 1000, size


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Pages:
    """`tabs` open pages, each fetching `/` as the page's script does: 2 s after the last
    fetch, or ten times the fetch's time when that is longer."""

    def __init__(self, url: str, tabs: int) -> None:
        self.url = url
        self.stop = threading.Event()
        self.count = 0
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(tabs)]

    def _run(self) -> None:
        while not self.stop.is_set():
            ms, _ = fetch(self.url)
            self.count += 1
            self.stop.wait(max(2.0, ms / 100))

    def __enter__(self) -> Pages:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(60)


def changes(store: EtcdStore, keys: KeyLayout, port: int, back: NamedHTTP, services: int,
            samples: int, tag: str) -> list[float]:
    """put → routable (the pinned host answers) of new instances, one at a time."""
    out = []
    for n in range(samples):
        iid, svc = f"{tag}{n:06d}", f"s{n % services}"
        t0 = time.monotonic()
        put_service(store, keys, f"/internal/app1/dev/{svc}", iid, back.port)
        wait_for(lambda iid=iid, svc=svc: get(port, f"{iid}.{svc}.dev.app1")[0] == 200,
                 timeout=30, interval=0.002, what="membership change")
        out.append((time.monotonic() - t0) * 1000)
        time.sleep(0.1)
    return out


def one_size(etcd: EtcdServer, store: EtcdStore, tmp: Path, size: int, samples: int,
             tabs: int, back: NamedHTTP) -> dict[str, str]:
    keys = KeyLayout(f"/bench-status-{size}")
    services = size // PER_SERVICE
    for s in range(services):
        for i in range(PER_SERVICE):  # ports that refuse: their checks fail, states vary
            put_service(store, keys, f"/internal/app1/dev/s{s}", f"{s:04x}{i:08x}", 20000 + i)
    port, metrics = free_port(), free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "buoy", "listen", "--listen-path", LISTEN, "--prefix", keys.prefix,
         "--etcd-endpoints", etcd.endpoint, "--http-bind", f"127.0.0.1:{port}",
         "--state-dir", str(tmp / f"s{size}"), "--confirm", "0", "--metrics-port", str(metrics)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{metrics}"
    try:
        last = f"s{services - 1}.dev.app1"
        wait_for(lambda: get(port, last)[1] not in ("buoy: no service for this host", "")
                 and get(port, last)[0] != 0, timeout=300, interval=0.2, what="all routed")
        time.sleep(3)  # the first checks done, runtime changes written
        page, json_ = [], []
        for _ in range(samples):
            time.sleep(1.1)  # past the second an answer is reused: a fresh one each time
            ms, page_size = fetch(base + "/")
            page.append(ms)
            time.sleep(1.1)
            ms, json_size = fetch(base + "/status.json")
            json_.append(ms)
        quiet = changes(store, keys, port, back, services, samples, "q")
        with Pages(base + "/", tabs) as pages:
            cpu0, t0 = cpu_seconds(proc.pid), time.monotonic()
            time.sleep(CPU_WINDOW)
            cpu = (cpu_seconds(proc.pid) - cpu0) / (time.monotonic() - t0)
            busy = changes(store, keys, port, back, services, samples, "b")
        time.sleep(2)
        cpu1, t1 = cpu_seconds(proc.pid), time.monotonic()
        time.sleep(CPU_WINDOW)
        idle_cpu = (cpu_seconds(proc.pid) - cpu1) / (time.monotonic() - t1)
    finally:
        proc.terminate()
        proc.wait(30)
    n = f"{size:,} instances"
    return {f"{n}: `/` fetched (show stat, build, render)": summary(page),
            f"{n}: `/status.json` fetched": summary(json_),
            f"{n}: sizes": f"page {page_size / 1e6:.2f} MB, JSON {json_size / 1e6:.2f} MB",
            f"{n}: membership change put → routable, no page open": summary(quiet),
            f"{n}: the same with {tabs} pages open ({pages.count} fetches)": summary(busy),
            f"{n}: listen's CPU with {tabs} pages open / none":
                f"{cpu * 100:.0f}% / {idle_cpu * 100:.0f}% of one core"}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="1000,10000")
    ap.add_argument("--samples", type=int, default=20)
    ap.add_argument("--tabs", type=int, default=10)
    args = ap.parse_args()
    load = os.getloadavg()[0]
    tmp = Path(tempfile.mkdtemp(prefix="buoy-bench-status-"))
    etcd = EtcdServer(tmp / "etcd").start()
    store = EtcdStore(EtcdSettings.from_strings(etcd.endpoint))
    back = NamedHTTP("back")
    rows: dict[str, str] = {}
    try:
        for size in (int(s) for s in args.sizes.split(",")):
            rows.update(one_size(etcd, store, tmp, size, args.samples, args.tabs, back))
    finally:
        back.close()
        store.close()
        etcd.stop()
    table = "\n".join(f"| {k} | {v} |" for k, v in rows.items())
    write_section("status-page", f"""## listen status page

`buoy listen --metrics-port` with `/` (HTML) and `/status.json`, real etcd and HAProxy on
127.0.0.1, {PER_SERVICE} instances per service (ports that refuse: their checks fail). A
fetch asks HAProxy `show stat` through the master socket, builds the status and renders
it; answers are reused for a second, so open pages cost at most one of each a second.
"Pages open" are clients fetching `/` as the page's script does (every 2 s, or ten times
a fetch's time when that is longer). Load average at the start: {load:.2f}, at the end:
{os.getloadavg()[0]:.2f} (the machine is shared).

| measure | figure |
|---|---|
{table}
""")
    print(table)


if __name__ == "__main__":
    main()
