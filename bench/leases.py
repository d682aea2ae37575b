"""etcd's CPU for lease keep-alives: a new stream per refresh (etcd3's `refresh_lease`,
buoy's old way) against one stream per lease holder (`EtcdStore.refresh` now), and
for comparison announce's way (`EtcdGateway.keepalive`: HTTP/JSON to etcd's gateway).

    python bench/leases.py [--leases 1000] [--period 5] [--window 60] [--rounds 3]

Starts its own etcd on loopback. Each of `--leases` lease holders is its own
EtcdStore (its own connection, as every announce and register is) with one lease
of TTL 15 s, refreshed every `--period` seconds, the holders' refreshes spread
evenly over the period. Per round and way, after one period of warm-up, etcd's CPU
time (user + system, /proc/<pid>/stat) is read over `--window` seconds. The ways
alternate round by round, so load from other processes on the machine falls on
both. Writes the `lease keep-alive` section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "bench")]

from etcd_server import EtcdServer  # noqa: E402
from report import write_section  # noqa: E402

from buoy.etcd.gateway import EtcdGateway  # noqa: E402
from buoy.etcd.settings import EtcdSettings  # noqa: E402
from buoy.etcd.store import EtcdStore  # noqa: E402

TTL = 15
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of `pid` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


@dataclass
class Holder:
    store: EtcdStore
    gateway: EtcdGateway
    lease: int


def old_refresh(holder: Holder) -> int:
    """buoy's refresh before the shared stream: etcd3 opens a stream for each one."""
    responses = list(holder.store._get_client().refresh_lease(holder.lease))
    return int(responses[0].TTL) if responses else 0


def new_refresh(holder: Holder) -> int:
    return holder.store.refresh(holder.lease)


def gateway_refresh(holder: Holder) -> int:
    """announce's refresh: one HTTP/JSON request to etcd's gateway on a kept connection."""
    return holder.gateway.keepalive(holder.lease)


WAYS: dict[str, tuple[str, Callable[[Holder], int]]] = {
    "old": ("old: a gRPC stream per refresh", old_refresh),
    "new": ("new: one gRPC stream per holder", new_refresh),
    "gateway": ("announce: HTTP/JSON gateway request per refresh", gateway_refresh),
}


def run_round(holders: list[Holder], refresh: Callable[[Holder], int],
              pid: int, period: float, window: float) -> tuple[float, int, int]:
    """(etcd CPU seconds over `window`, refreshes in it, failed refreshes in it)."""
    step = period / len(holders)
    start = time.monotonic()
    measure_from, measure_to = start + period, start + period + window
    cpu_from = refreshes = failures = 0
    cpu_at_start: float | None = None
    k = 0
    while True:
        due = start + k * step
        now = time.monotonic()
        if due > now:
            time.sleep(due - now)
        now = time.monotonic()
        if cpu_at_start is None and now >= measure_from:
            cpu_at_start = cpu_seconds(pid)
        if now >= measure_to:
            break
        try:
            ok = refresh(holders[k % len(holders)]) > 0
        except Exception:  # noqa: BLE001 - counted, not fatal
            ok = False
        if cpu_at_start is not None:
            refreshes += 1
            failures += not ok
        k += 1
    assert cpu_at_start is not None
    cpu_from = cpu_seconds(pid) - cpu_at_start
    return cpu_from, refreshes, failures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--leases", type=int, default=1000)
    parser.add_argument("--period", type=float, default=5.0, help="seconds between refreshes")
    parser.add_argument("--window", type=float, default=60.0, help="seconds measured per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--ways", default="old,new,gateway",
                        help=f"comma-separated, of {', '.join(WAYS)}")
    args = parser.parse_args()
    ways = [w for w in args.ways.split(",") if w]
    results: dict[str, list[tuple[float, int, int]]] = {w: [] for w in ways}
    with tempfile.TemporaryDirectory(prefix="buoy-bench-leases-") as work:
        server = EtcdServer(Path(work) / "etcd").start()
        assert server.proc is not None
        holders: list[Holder] = []
        try:
            settings = EtcdSettings.from_strings(server.endpoint, timeout=5)
            for _ in range(args.leases):
                store = EtcdStore(settings)
                holders.append(Holder(store, EtcdGateway(settings), store.grant(TTL)))
            for r in range(args.rounds):
                for way in ways:
                    for h in holders:
                        h.store.keepalive.close()  # each way starts from no open stream
                    got = run_round(holders, WAYS[way][1], server.proc.pid, args.period,
                                    args.window)
                    results[way].append(got)
                    print(f"round {r + 1} {way}: etcd cpu {got[0]:.2f} s in {args.window:.0f} s, "
                          f"refreshes {got[1]}, failed {got[2]}", flush=True)
        finally:
            for h in holders:
                h.store.close()
                h.gateway.close()
            server.stop()
    write_section("lease keep-alive", body(results, args))


def body(results: dict[str, list[tuple[float, int, int]]], args: argparse.Namespace) -> str:
    def row(way: str, label: str) -> str:
        runs = results[way]
        pct = [100 * cpu / args.window for cpu, _, _ in runs]
        per = [1e6 * cpu / max(1, n) for cpu, n, _ in runs]
        return (f"| {label} | {statistics.median(pct):.1f} % | {min(pct):.1f}–{max(pct):.1f} % "
                f"| {statistics.median(per):.0f} µs | {sum(n for _, n, _ in runs)} "
                f"| {sum(f for _, _, f in runs)} |")

    old = statistics.median(cpu for cpu, _, _ in results.get("old") or [(0.0, 0, 0)])
    new = statistics.median(cpu for cpu, _, _ in results.get("new") or [(0.0, 0, 0)])
    ratio = f"{old / new:.2f}×" if new > 0 else "n/a"
    rows = "\n".join(row(way, WAYS[way][0]) for way in results)
    return (
        f"## lease keep-alive\n\n"
        f"etcd's CPU while {args.leases} lease holders (one EtcdStore, connection and lease "
        f"each) refresh every {args.period:g} s, spread evenly: etcd's user + system time "
        f"from /proc/<pid>/stat over {args.window:g} s per round, {args.rounds} rounds per "
        f"way, the ways alternating. *Old*: a new LeaseKeepAlive stream per refresh (etcd3's "
        f"`refresh_lease`). *New*: one stream per holder kept open, a request per refresh "
        f"(`EtcdStore.refresh`: register, listen). *announce*: `EtcdGateway.keepalive`, a "
        f"POST to etcd's `/v3/lease/keepalive` on a kept HTTP connection (etcd's gateway "
        f"opens a stream per request inside etcd).\n\n"
        f"| way | etcd CPU (median of one core) | spread (min–max) | etcd CPU ÷ refreshes "
        f"(median) | refreshes measured | failed |\n|---|---|---|---|---|---|\n"
        f"{rows}\n\nThe old way costs etcd {ratio} the CPU of the new one (medians).")


if __name__ == "__main__":
    main()
