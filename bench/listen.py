"""Benchmark `buoy listen`: put→routable latency, zero failed requests, scale; vs the naive way.

The naive way is what the seeds did: re-render and reload HAProxy on every change,
no runtime API. Both run in one go, on the same machine, against a real etcd,
a real HAProxy and real HTTP backends on 127.0.0.1.

    python bench/listen.py [--churn-seconds 60] [--reloads 20] [--samples 40]
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "bench")]

from etcd_server import EtcdServer, wait_for  # noqa: E402
from listen_helpers import NamedHTTP, RunningListener, get, put_service  # noqa: E402
from report import percentile, write_section  # noqa: E402

from buoy.keys import KeyLayout  # noqa: E402
from buoy.records import AnnouncePath  # noqa: E402
from buoy.settings import EtcdSettings  # noqa: E402
from buoy.store import EtcdStore  # noqa: E402
from listen.apply import Applier  # noqa: E402
from listen.model import Routing  # noqa: E402

WEB = "/internal/app1/dev/web"
LISTEN = "/services/internal/app1/dev"


class NaiveApplier(Applier):
    """Re-render and reload on every change; never the runtime API."""

    def apply(self, wanted: Routing) -> bool:
        if self.applied is not None and wanted == self.applied:
            return True
        self.applied = None if self.applied is None else Routing()
        return self._reload(wanted)


def listener(etcd: EtcdServer, keys: KeyLayout, state: Path, naive: bool) -> RunningListener:
    r = RunningListener(EtcdStore(EtcdSettings.from_strings(etcd.endpoint)), keys, state, [LISTEN],
                        drain_timeout=2.0)
    if naive:
        old = r.listener.applier
        r.listener.applier = NaiveApplier(old.haproxy, old.renderer, old.config_path,
                                          old.pin_path, drain_timeout=2.0)
    return r.start()


def ms(v: list[float]) -> str:
    return f"p50 {percentile(v, 0.5):.0f} ms, p99 {percentile(v, 0.99):.0f} ms (n={len(v)})"


def latency(store: EtcdStore, keys: KeyLayout, r: RunningListener, backs: list[NamedHTTP],
            samples: int, tag: str) -> tuple[list[float], list[float]]:
    member, service = [], []
    for i in range(samples):
        iid = f"{tag}m{i}"
        t0 = time.monotonic()
        put_service(store, keys, WEB, iid, backs[i % len(backs)].port)
        wait_for(lambda iid=iid: get(r.http_port, f"{iid}.web.dev.app1")[0] == 200, timeout=10,
                 interval=0.005, what="member routable")
        member.append((time.monotonic() - t0) * 1000)
        store.delete(keys.service_key(AnnouncePath.parse(WEB), iid))
    for i in range(max(5, samples // 4)):
        svc = f"{tag}s{i}"
        t0 = time.monotonic()
        put_service(store, keys, f"/internal/app1/dev/{svc}", "x", backs[0].port)
        wait_for(lambda svc=svc: get(r.http_port, f"{svc}.dev.app1")[0] == 200, timeout=15,
                 interval=0.005, what="service routable")
        service.append((time.monotonic() - t0) * 1000)
    return member, service


def wrk(port: int, seconds: float, keepalive: bool) -> tuple[int, int]:
    """(requests, failed = non-2xx/3xx + socket errors) under a bounded load."""
    cmd = ["wrk", "-t1", "-c8", f"-d{max(1, int(seconds))}s", "-H", "Host: web.dev.app1"]
    if not keepalive:
        cmd += ["-H", "Connection: close"]
    out = subprocess.run(cmd + [f"http://127.0.0.1:{port}/"], capture_output=True,
                         text=True).stdout
    reqs = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    bad = sum(int(x) for x in re.findall(r"Non-2xx or 3xx responses: (\d+)", out))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return reqs, bad + (sum(int(x) for x in m.groups()) if m else 0)


def under_load(port: int, seconds: float, keepalive: bool, action) -> tuple[int, int]:  # type: ignore[no-untyped-def]
    import threading
    result: list[tuple[int, int]] = []
    t = threading.Thread(target=lambda: result.append(wrk(port, seconds, keepalive)))
    t.start()
    time.sleep(0.5)
    action(seconds - 1.0)
    t.join()
    return result[0]


def churn(store: EtcdStore, keys: KeyLayout, backs: list[NamedHTTP]):  # type: ignore[no-untyped-def]
    def run(seconds: float) -> None:
        end, i, present = time.monotonic() + seconds, 0, {0, 1}
        while time.monotonic() < end:
            n = 2 + i % (len(backs) - 2)
            if n in present:
                store.delete(keys.service_key(AnnouncePath.parse(WEB), f"c{n}"))
                present.discard(n)
            else:
                put_service(store, keys, WEB, f"c{n}", backs[n].port)
                present.add(n)
            i += 1
            time.sleep(0.2)
    return run


def reloads(store: EtcdStore, keys: KeyLayout, backs: list[NamedHTTP], count: int, tag: str):  # type: ignore[no-untyped-def]
    def run(_seconds: float) -> None:
        for i in range(count):
            put_service(store, keys, f"/internal/app1/dev/{tag}r{i}", "x", backs[0].port)
            time.sleep(0.3)
    return run


def scale(etcd: EtcdServer, store: EtcdStore, tmp: Path, naive: bool) -> str:
    """1,000 services × 10 instances: start-to-routable, one more change, and RSS."""
    keys = KeyLayout(f"/bench-scale-{'n' if naive else 'r'}")
    for s in range(1000):
        for i in range(10):
            put_service(store, keys, f"/internal/app1/dev/s{s}", f"i{i}", 20000 + i)
    r = listener(etcd, keys, tmp / f"scale-{naive}", naive)
    t0 = time.monotonic()
    put_service(store, keys, "/internal/app1/dev/s999", "extra", 30000)  # a membership change
    wait_for(lambda: any(s.name == "extra" for b in (r.listener.applier.applied or Routing()).backends
                         for s in b.servers), timeout=60, what="change applied")
    change = (time.monotonic() - t0) * 1000
    # a full render + validate + reload of everything, timed in place
    t1 = time.monotonic()
    assert r.listener.applier._reload(r.listener.wanted())
    full = (time.monotonic() - t1) * 1000
    rss = int(re.search(r"VmRSS:\s+(\d+)", Path("/proc/self/status").read_text()).group(1))  # type: ignore[union-attr]
    r.stop()
    return f"full render+validate+reload {full:.0f} ms; one membership change {change:.0f} ms; " \
           f"process RSS {rss / 1024:.0f} MB"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--churn-seconds", type=float, default=60)
    ap.add_argument("--reloads", type=int, default=20)
    ap.add_argument("--samples", type=int, default=40)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="buoy-bench-listen-"))
    etcd = EtcdServer(tmp / "etcd").start()
    store = EtcdStore(EtcdSettings.from_strings(etcd.endpoint))
    backs = [NamedHTTP(f"b{i}") for i in range(6)]
    rows: dict[str, dict[str, str]] = {}
    p99: dict[str, float] = {}
    try:
        for naive in (False, True):
            name = "naive (reload every change)" if naive else "buoy listen (runtime API)"
            keys = KeyLayout(f"/bench-{'n' if naive else 'r'}")
            for n in (0, 1):
                put_service(store, keys, WEB, f"c{n}", backs[n].port)
            r = listener(etcd, keys, tmp / f"state-{naive}", naive)
            m, s = latency(store, keys, r, backs, args.samples, "n" if naive else "r")
            p99[name] = percentile(m, 0.99)
            row = {"membership put→routable": ms(m), "new service put→routable": ms(s)}
            for ka in (True, False):
                label = "keep-alive" if ka else "Connection: close"
                req, bad = under_load(r.http_port, args.churn_seconds, ka, churn(store, keys, backs))
                row[f"churn, {label}"] = f"{bad} failed / {req} requests"
                req, bad = under_load(r.http_port, args.reloads * 0.3 + 2, ka,
                                      reloads(store, keys, backs, args.reloads,
                                              f"{'n' if naive else 'r'}{int(ka)}"))
                row[f"{args.reloads} reloads, {label}"] = f"{bad} failed / {req} requests"
            row["HAProxy reloads during the run"] = str(r.listener.haproxy.reloads)
            r.stop()
            row["1,000 services × 10 instances"] = scale(etcd, store, tmp, naive)
            rows[name] = row
            print(name, row, flush=True)
    finally:
        for b in backs:
            b.close()
        store.close()
        etcd.stop()
    names = list(rows)
    body = ["## buoy listen", "",
            f"Churn: one add or remove every 200 ms for {args.churn_seconds:.0f} s; wrk -t1 -c8 "
            "(bounded load) against python backends. Failed = non-2xx/3xx + socket errors.", "",
            "| measure | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for key in rows[names[0]]:
        body.append(f"| {key} | " + " | ".join(rows[n].get(key, "") for n in names) + " |")
    body += ["", f"Ratio naive/listen, membership put→routable p99: "
             f"{p99[names[1]] / p99[names[0]]:.1f}×."]
    write_section("listen", "\n".join(body))


if __name__ == "__main__":
    main()
