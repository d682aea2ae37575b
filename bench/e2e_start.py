"""Benchmark a buoy/base container's life: `docker start` → routed, and what buoy costs in it.

    python bench/e2e_start.py [--starts 20] [--no-build]

In one Docker network of its own: etcd in a container, a buoy/haproxy frontend
(published on 127.0.0.1), `buoy register --internal --network <it>` on this host.
Then, `--starts` times: create a buoy/base web container (not timed), `docker start`
it, and poll the frontend every 5 ms with the instance's own virtual host
(`<ID>.ghost.example`) until it answers with the instance's ID: start → routed. The
announce key's arrival is polled too (start → key, key → routed). Each container is
removed before the next.

Then the per-container cost: the RSS of every process buoy adds in a container
(supervisord, which is PID 1 through `python -m buoy.ops.supervise`; announce; with
LISTEN_PATH also listen and HAProxy), read from /proc on this host after 20 s of
steady state, for a container without and one with LISTEN_PATH.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "bench")]

from docker_helpers import RegisterProcess  # noqa: E402
from e2e_helpers import BASE, FRONTEND, WEB_APP, Scenario, build_etcd_image, build_images, try_get  # noqa: E402
from etcd_server import wait_for  # noqa: E402
from report import percentile, summary, write_section  # noqa: E402

from buoy.etcd.keys import KeyLayout  # noqa: E402
from buoy.etcd.records import AnnouncePath  # noqa: E402
from buoy.etcd.settings import EtcdSettings  # noqa: E402
from buoy.etcd.store import EtcdStore  # noqa: E402

WEB = AnnouncePath.parse("/internal/app1/dev/web/ghost.example")
PREFIX = "/bench-e2e"


def cpu_seconds(pid: int) -> float:
    """CPU time of every thread of `pid`, in nanoseconds from schedstat (clock ticks of 10 ms
    would round an idle process's minutes to zero or one tick)."""
    return sum(int((task / "schedstat").read_text().split()[0])
               for task in Path(f"/proc/{pid}/task").iterdir()) / 1e9


def proc_tree(pid: int) -> list[tuple[int, str, float]]:
    """(pid, command, RSS MB) of `pid` and all its descendants."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        try:
            cmd = (Path(f"/proc/{p}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip())
            rss = next(int(line.split()[1]) for line in
                       Path(f"/proc/{p}/status").read_text().splitlines()
                       if line.startswith("VmRSS:")) / 1024
        except (OSError, StopIteration):
            continue
        out.append((p, cmd, rss))
        todo.extend(children.get(p, []))
    return out


def role(cmd: str) -> str:
    if "buoy.ops.supervise" in cmd:
        return "supervisord (PID 1, python -m buoy.ops.supervise)"
    if "buoy announce" in cmd or "-m buoy.announce" in cmd:
        return "announce (python -m buoy.announce)"
    if "buoy listen" in cmd:
        return "listen"
    if "haproxy" in cmd:
        return "haproxy"
    return "app"


def container_rss(container: Any) -> dict[str, float]:
    container.reload()
    totals: dict[str, float] = {}
    for _, cmd, rss in proc_tree(int(container.attrs["State"]["Pid"])):
        totals[role(cmd)] = totals.get(role(cmd), 0.0) + rss
    return totals


def container_cpu(container: Any, seconds: float) -> dict[str, float]:
    """CPU-seconds per hour of each role over `seconds` of steady state."""
    container.reload()
    procs = proc_tree(int(container.attrs["State"]["Pid"]))
    before = {pid: cpu_seconds(pid) for pid, _, _ in procs}
    time.sleep(seconds)
    out: dict[str, float] = {}
    for pid, cmd, _ in procs:
        try:
            used = cpu_seconds(pid) - before[pid]
        except OSError:
            continue
        out[role(cmd)] = out.get(role(cmd), 0.0) + used / seconds * 3600
    return out


def web_env(sc: Scenario, listen: bool = False) -> dict[str, str]:
    env = {"BUOY_ETCD_ENDPOINTS": f"http://buoy-e2e-{sc.run_id}-etcd:2379", "BUOY_PREFIX": PREFIX,
           "ANNOUNCE_PATH": str(WEB), "PORT": "8000", "TYPE": "HTTP"}
    if listen:
        env.update(LISTEN_PATH="/services/internal/app1/dev/db", BUOY_HTTP_BIND="127.0.0.1:8080")
    return env


def create_web(sc: Scenario, name: str, listen: bool = False) -> Any:
    container = sc.client.containers.create(
        BASE, ["python3", "-c", WEB_APP], name=f"buoy-e2e-{sc.run_id}-{name}",
        environment=web_env(sc, listen), labels=sc.labels, network=sc.network_name,
        stop_signal="SIGTERM")
    sc.containers.append(container)
    return container


def idle_fraction(seconds: float = 0.5) -> float:
    """How idle the machine's CPUs were over the next `seconds` (/proc/stat)."""
    def sample() -> tuple[int, int]:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        return fields[3] + fields[4], sum(fields)  # idle + iowait, total

    idle0, total0 = sample()
    time.sleep(seconds)
    idle1, total1 = sample()
    return (idle1 - idle0) / max(1, total1 - total0)


def wait_for_quiet(minimum: float, limit: float = 60.0) -> bool:
    """Wait (at most `limit` s) for half a second in which the CPUs are `minimum` idle: the
    machine is shared, and a start measured under someone else's burst measures them."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if idle_fraction() >= minimum:
            return True
    return False


def one_start(sc: Scenario, store: EtcdStore, port: int, i: int) -> tuple[float, float, float]:
    """(docker start call, start → key, start → routed) in ms for one fresh container."""
    c = create_web(sc, f"start{i}")
    c.reload()
    cid = str(c.attrs["Config"]["Hostname"]).lower()
    key = KeyLayout(PREFIX).announce_key(WEB, cid)
    host = f"{cid}.ghost.example"
    keyed: list[float] = []

    def routed() -> bool:
        if not keyed and store.get(key) is not None:
            keyed.append(time.monotonic())
        return bool(try_get(port, host) == cid)

    t0 = time.monotonic()
    c.start()
    t_call = time.monotonic()
    wait_for(routed, 30, interval=0.005, what=f"start{i} routed")
    t1 = time.monotonic()
    c.remove(force=True)
    return (t_call - t0) * 1000, ((keyed[0] if keyed else t1) - t0) * 1000, (t1 - t0) * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--starts", type=int, default=20)
    parser.add_argument("--no-build", action="store_true")
    parser.add_argument("--cpu-seconds", type=float, default=120.0,
                        help="steady-state window for the CPU figures")
    parser.add_argument("--quiet", type=float, default=0.6,
                        help="before each start, wait (up to 60 s) for the CPUs to be this idle "
                             "for half a second (0: do not wait)")
    args = parser.parse_args()
    if not args.no_build:
        build_images()
    sc = Scenario()
    # Not labelled buoy.test=1: other suites remove every such container when they end.
    sc.labels = {"buoy.e2e": sc.run_id, "buoy.bench": "e2e-start"}
    procs: list[RegisterProcess] = []
    try:
        build_etcd_image(sc.client)
        etcd_c = sc.run("etcd", "buoy-e2e-etcd:latest", publish=2379, command=[
            "--name", "e2e", "--data-dir", "/tmp/etcd", "--listen-peer-urls",
            "http://127.0.0.1:2380", "--listen-client-urls", "http://0.0.0.0:2379",
            "--advertise-client-urls", f"http://buoy-e2e-{sc.run_id}-etcd:2379"])
        endpoint = f"http://127.0.0.1:{sc.published(etcd_c, 2379)}"
        store = EtcdStore(EtcdSettings.from_strings(endpoint, timeout=2.0))
        wait_for(lambda: _answers(store), 30, what="etcd container")
        register = RegisterProcess(Path("/tmp") / f"bench-e2e-register-{sc.run_id}.log", endpoint,
                                   PREFIX, "--internal", "--network", sc.network_name,
                                   "--host-ip", "127.0.0.1").start()
        procs.append(register)
        front = sc.run("frontend", FRONTEND, publish=80, env={
            "BUOY_ETCD_ENDPOINTS": f"http://buoy-e2e-{sc.run_id}-etcd:2379", "BUOY_PREFIX": PREFIX,
            "LISTEN_PATH": "/services/internal/app1/dev"})
        port = sc.published(front, 80)
        one_start(sc, store, port, -1)  # warm: page cache, frontend's first service
        calls, keyed, routed = [], [], []
        load_before = os.getloadavg()[0]
        noisy = 0
        for i in range(args.starts):
            if args.quiet > 0 and not wait_for_quiet(args.quiet):
                noisy += 1
            c, k, r = one_start(sc, store, port, i)
            calls.append(c)
            keyed.append(k)
            routed.append(r)
            print(f"start {i}: docker start call {c:.0f} ms, key {k:.0f} ms, routed {r:.0f} ms",
                  flush=True)
        load = (load_before, os.getloadavg()[0])
        quiet = (args.quiet, noisy)
        plain, with_listen = create_web(sc, "rss"), create_web(sc, "rss-listen", listen=True)
        plain.start()
        with_listen.start()
        time.sleep(20)  # steady state: imports done, first grants, HAProxy up
        rss_plain, rss_listen = container_rss(plain), container_rss(with_listen)
        cpu_plain = container_cpu(plain, args.cpu_seconds)
        store.close()
    except BaseException:
        print(sc.logs())
        raise
    finally:
        for p in procs:
            p.kill()
        sc.cleanup()
    write_section("e2e-start", render(args.starts, calls, keyed, routed, rss_plain, rss_listen,
                                         cpu_plain, args.cpu_seconds, load, quiet))


def _answers(store: EtcdStore) -> bool:
    try:
        store.revision()
        return True
    except Exception:  # noqa: BLE001 - not up yet
        return False


def render(n: int, calls: list[float], keyed: list[float], routed: list[float],
           plain: dict[str, float], listen: dict[str, float], cpu: dict[str, float],
           cpu_window: float, load: tuple[float, float], quiet: tuple[float, int]) -> str:
    key_routed = [r - k for k, r in zip(keyed, routed, strict=True)]
    after = [r - c for c, r in zip(calls, routed, strict=True)]
    quiet_note = (f"Each start waited (up to 60 s) for half a second with the CPUs at least "
                  f"{quiet[0]:.0%} idle; {quiet[1]} of {n} waits ran out." if quiet[0] > 0
                  else "Starts did not wait for a quiet machine.")
    roles = sorted({*plain, *listen} - {"app"})

    def cell(d: dict[str, float], r: str) -> str:
        return f"{d[r]:.1f} MB" if r in d else "-"

    buoy_plain = sum(v for r, v in plain.items() if r != "app")
    buoy_listen = sum(v for r, v in listen.items() if r != "app")
    rows = "\n".join(f"| {r} | {cell(plain, r)} | {cell(listen, r)} |" for r in roles)
    cpu_cell = ", ".join(f"{r} {v:.2f} CPU-s/h" for r, v in sorted(cpu.items()) if r != "app")
    body = f"""## e2e: a buoy/base container's start and its cost

`docker start` of a fresh buoy/base web container (ANNOUNCE_PATH, python http.server app)
→ the frontend routes its own virtual host to it; {n} starts, one after another.

| what | target | measured |
|---|---|---|
| container start → routed | p99 ≤ 500 ms | {summary(routed)} |
| of which the `docker start` call itself (Docker: namespaces, network, runc) | | {summary(calls)} |
| the rest: `docker start` returned → routed (PID 1, announce, register, listen) | | {summary(after)} |
| container start → announce key in etcd | | {summary(keyed)} |
| announce key → routed (register + listen + HAProxy) | | {summary(key_routed)} |

p50 {percentile(routed, 0.5):.0f} ms, p99 {percentile(routed, 0.99):.0f} ms (start → routed). The machine's
load average (1 min) was {load[0]:.2f} before the starts and {load[1]:.2f} after them: the
machine is shared (other people's benchmarks run on it), and Docker's own share moves with
it. {quiet_note}

What buoy adds to each container (RSS after 20 s, from /proc on the host; the app itself
is not counted):

| process | ANNOUNCE_PATH only | ANNOUNCE_PATH + LISTEN_PATH |
|---|---|---|
{rows}
| **total buoy adds** | **{buoy_plain:.1f} MB** | **{buoy_listen:.1f} MB** |

CPU at the defaults (TTL 15 s, interval 5 s), ANNOUNCE_PATH only, over {cpu_window:.0f} s of
steady state: {cpu_cell}.
"""
    print(body)
    return body


if __name__ == "__main__":
    main()
