"""Benchmark `buoy announce`: timings of its promises, and its steady cost.

    python bench/announce.py [--runs 5] [--steady 120]

Measures, against a real etcd on loopback, with `python -m buoy.announce` (what supervisord
runs in the images; `buoy announce` without click) run as a subprocess:
key present after start, gone after SIGTERM, gone after SIGKILL (TTL 3 s), back
after an etcd kill -9 and restart (interval 1 s); then the steady RSS and CPU
seconds per hour at the default TTL 15 s / interval 5 s.
"""

from __future__ import annotations

import argparse
import signal
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "bench")]

from agent_process import AgentProcess  # noqa: E402
from etcd_server import EtcdServer, wait_for  # noqa: E402
from report import summary, write_section  # noqa: E402

from buoy.etcd.keys import KeyLayout  # noqa: E402
from buoy.etcd.records import AnnouncePath  # noqa: E402
from buoy.etcd.settings import EtcdSettings  # noqa: E402
from buoy.etcd.store import EtcdStore  # noqa: E402

PATH = "/internal/app1/dev/web"


def agent(server: EtcdServer, prefix: str, tmp: Path, module: str = "announce",
          **env: str) -> AgentProcess:
    """`python -m buoy.announce` (what supervisord runs in the images), or `buoy announce`."""
    base = {"ANNOUNCE_PATH": PATH, "PORT": "80", "TYPE": "HTTP", "ANNOUNCE_ID": "web1",
            "BUOY_ETCD_ENDPOINTS": server.endpoint, "BUOY_PREFIX": prefix,
            "BUOY_LOG_LEVEL": "info"}
    base.update(env)
    process = AgentProcess(["announce"], base, tmp)
    if module == "announce":
        process.args = [sys.executable, "-m", "announce"]
    return process.start()


def present(store: EtcdStore, key: str) -> bool:
    try:
        return store.get(key) is not None
    except Exception:  # noqa: BLE001 - etcd restarting
        return False


def timings(server: EtcdServer, store: EtcdStore, tmp: Path, run: int) -> dict[str, float]:
    prefix = f"/bench{run}"
    key = KeyLayout(prefix).announce_key(AnnouncePath.parse(PATH), "web1")
    out: dict[str, float] = {}
    t0 = time.monotonic()
    a = agent(server, prefix, tmp, ANNOUNCE_TTL="3", ANNOUNCE_INTERVAL="1")
    wait_for(lambda: present(store, key), 20, interval=0.005, what="present")
    out["start"] = time.monotonic() - t0
    t0 = time.monotonic()
    a.signal(signal.SIGTERM)
    wait_for(lambda: not present(store, key), 10, interval=0.005, what="gone")
    out["sigterm"] = time.monotonic() - t0
    a.wait()
    a = agent(server, prefix, tmp, ANNOUNCE_TTL="3", ANNOUNCE_INTERVAL="1")
    wait_for(lambda: present(store, key), 20, what="present")
    t0 = time.monotonic()
    a.signal(signal.SIGKILL)
    wait_for(lambda: not present(store, key), 20, interval=0.01, what="expired")
    out["sigkill"] = time.monotonic() - t0
    a.wait()
    a = agent(server, prefix, tmp, ANNOUNCE_TTL="3", ANNOUNCE_INTERVAL="1")
    wait_for(lambda: present(store, key), 20, what="present")
    server.kill()
    shutil_rmtree(server.data_dir)  # worst case: etcd returns with nothing; re-grant and re-put
    server.start()
    t0 = time.monotonic()
    wait_for(lambda: present(store, key), 30, interval=0.01, what="back")
    out["restart"] = time.monotonic() - t0
    a.stop()
    return out


def shutil_rmtree(path: Path) -> None:
    import shutil
    shutil.rmtree(path, ignore_errors=True)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def steady(server: EtcdServer, tmp: Path, seconds: float) -> tuple[float, float, float]:
    """(max RSS of `python -m buoy.announce`, its CPU-s per hour, RSS of `buoy announce`)."""
    cli = agent(server, "/steady-cli", tmp, module="buoy", ANNOUNCE_ID="cli")
    a = agent(server, "/steady", tmp)
    assert a.proc is not None and cli.proc is not None
    pid = a.proc.pid
    time.sleep(10)  # past start-up: imports, first grant
    cli_rss = rss_mb(cli.proc.pid)
    cli.stop()

    def cpu() -> float:  # nanoseconds from schedstat: clock ticks (10 ms) are too coarse
        return sum(int((task / "schedstat").read_text().split()[0])
                   for task in Path(f"/proc/{pid}/task").iterdir()) / 1e9

    c0, t0 = cpu(), time.monotonic()
    rss = []
    while time.monotonic() - t0 < seconds:
        time.sleep(5)
        rss.append(rss_mb(pid))
    per_hour = (cpu() - c0) / (time.monotonic() - t0) * 3600
    a.stop()
    return max(rss), per_hour, cli_rss


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--steady", type=float, default=120.0)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="buoy-bench-announce-"))
    server = EtcdServer(tmp / "etcd").start()
    store = EtcdStore(EtcdSettings.from_strings(server.endpoint, timeout=1))
    try:
        results = [timings(server, store, tmp, i) for i in range(args.runs)]
        rss, cpu_hour, cli_rss = steady(server, tmp, args.steady)
    finally:
        store.close()
        server.stop()
    col = {k: [r[k] * 1000 for r in results] for k in results[0]}
    body = f"""## announce

| what | target | measured |
|---|---|---|
| key present after start (process start included) | < 1 s | {summary(col["start"])} |
| key gone after SIGTERM | < 0.5 s | {summary(col["sigterm"])} |
| key gone after SIGKILL, TTL 3 s | < TTL + 1 s = 4 s | {summary(col["sigkill"])} |
| key back after etcd kill -9 + restart, empty data dir, interval 1 s | < 2 s | {summary(col["restart"])} |
| steady RSS, TTL 15 s / interval 5 s (max over {args.steady:.0f} s) | ≤ 20 MB | {rss:.1f} MB |
| RSS of `buoy announce` (click loaded), after 10 s | | {cli_rss:.1f} MB |
| CPU per hour at the default interval (over {args.steady:.0f} s) | ≤ 1 CPU-s | {cpu_hour:.2f} CPU-s |

The SIGKILL row counts from the kill to the key's expiry, so it is about the TTL itself.
announce speaks to etcd through its JSON gateway over one kept-open HTTP connection
(`buoy.etcd.gateway`, no gRPC). Every row runs `python -m buoy.announce`, what supervisord
runs in the images. The steady rows are one process on the host's Python (whose
site-packages add a little), sampled every 5 s from /proc after 10 s of warm-up; inside
a buoy/base container see the `e2e-start` section. Before this client (gRPC, a
keep-alive thread) the same rows read 43.1 MB and 5.10 CPU-s per hour.
"""
    write_section("announce", body)
    print(body)


if __name__ == "__main__":
    main()
