"""Benchmark `buoy listen` against real etcd, HAProxy and HTTP backends on 127.0.0.1.

Measures put → routable and delete → no longer balanced, backend connections per request
and requests/s side by side with the same HAProxy run from a static config, failed
requests during churn, reloads and a 3 → 1 scale-down with the stopped ports accepting and
closing, one membership change at 10,000 instances with listen + HAProxy memory (PSS), and `docker
kill` of a real container → HAProxy no longer balancing it (register, etcd, listen). The
naive way (re-render and reload on every change) runs the latency part for comparison.

    python bench/listen.py [--samples 60] [--load-seconds 20] [--services 1000] [--kills 20]
                           [--scale-downs 5]
    python bench/listen.py --only kills|scale   # one part, printed, nothing written
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "bench")]

import docker.errors  # noqa: E402
from docker_helpers import (  # noqa: E402
    RegisterProcess,
    docker_client,
    ensure_image,
    published_port,
)
from etcd_server import EtcdServer, free_port, wait_for  # noqa: E402
from listen_helpers import NamedHTTP, Requests, RunningListener, get, put_service  # noqa: E402
from report import percentile, summary, write_section  # noqa: E402

from buoy.etcd.keys import KeyLayout  # noqa: E402
from buoy.etcd.records import AnnouncePath, AnnounceRecord  # noqa: E402
from buoy.etcd.settings import EtcdSettings  # noqa: E402
from buoy.etcd.store import EtcdStore  # noqa: E402
from buoy.listen.apply import Applier  # noqa: E402
from buoy.listen.model import Routing  # noqa: E402

WEB = "/internal/app1/dev/web"
LISTEN = "/services/internal/app1/dev"


class NaiveApplier(Applier):
    """Re-render and reload on every change; never the runtime API."""

    def apply(self, wanted: Routing) -> bool:
        if self.applied is not None and wanted == self.applied:
            return True
        return self._reload(wanted)


def new_store(etcd: EtcdServer) -> EtcdStore:
    return EtcdStore(EtcdSettings.from_strings(etcd.endpoint))


def listener(etcd: EtcdServer, keys: KeyLayout, state: Path, naive: bool = False,
             **options: object) -> RunningListener:
    r = RunningListener(new_store(etcd), keys, state, [LISTEN], drain_timeout=2.0, **options)
    if naive:
        old = r.listener.applier
        r.listener.applier = NaiveApplier(old.haproxy, old.renderer, old.config_path,
                                          old.pin_path, drain_timeout=2.0)
    return r.start()


def key(keys: KeyLayout, path: str, iid: str) -> str:
    return keys.service_key(AnnouncePath.parse(path), iid)


# latency -----------------------------------------------------------------------------------
def latency(store: EtcdStore, keys: KeyLayout, r: RunningListener, backs: list[NamedHTTP],
            samples: int, tag: str) -> dict[str, list[float]]:
    """put → routable (its pinned host answers), delete → no longer balanced (8 answers in a
    row without it), new service put → routable; one change at a time, 100 ms apart."""
    out: dict[str, list[float]] = {"put": [], "delete": [], "service": []}
    for i in range(samples):
        iid, back = f"{tag}m{i}", backs[2 + i % (len(backs) - 2)]
        t0 = time.monotonic()
        put_service(store, keys, WEB, iid, back.port)
        wait_for(lambda iid=iid: get(r.http_port, f"{iid}.web.dev.app1")[0] == 200, timeout=10,
                 interval=0.002, what="member routable")
        out["put"].append((time.monotonic() - t0) * 1000)
        time.sleep(0.1)
        t0 = time.monotonic()
        store.delete(key(keys, WEB, iid))
        out["delete"].append(unbalanced(r.http_port, back.name, t0))
        time.sleep(0.1)
    for i in range(max(5, samples // 6)):
        svc = f"{tag}s{i}"
        t0 = time.monotonic()
        put_service(store, keys, f"/internal/app1/dev/{svc}", "x", backs[0].port)
        wait_for(lambda svc=svc: get(r.http_port, f"{svc}.dev.app1")[0] == 200, timeout=15,
                 interval=0.002, what="service routable")
        out["service"].append((time.monotonic() - t0) * 1000)
    return out


def unbalanced(port: int, name: str, t0: float) -> float:
    """ms from t0 to the first of 8 answers in a row that do not come from `name`."""
    streak, first = 0, 0.0
    deadline = t0 + 10
    while time.monotonic() < deadline:
        now = time.monotonic()
        status, body = get(port, "web.dev.app1")
        if status == 200 and body != name:
            first = first if streak else now
            streak += 1
            if streak >= 8:
                return (first - t0) * 1000
        else:
            streak = 0
    raise AssertionError(f"{name} still balanced after 10 s")


# load --------------------------------------------------------------------------------------
def wrk(port: int, seconds: float, keepalive: bool = True, host: str = "web.dev.app1") -> tuple[int, int]:
    """(requests, failed = non-2xx/3xx + socket errors) under a bounded load."""
    cmd = ["wrk", "-t1", "-c8", f"-d{max(1, round(seconds))}s", "-H", f"Host: {host}"]
    if not keepalive:
        cmd += ["-H", "Connection: close"]
    out = subprocess.run(cmd + [f"http://127.0.0.1:{port}/"], capture_output=True,
                         text=True, timeout=seconds + 30).stdout
    reqs = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    bad = sum(int(x) for x in re.findall(r"Non-2xx or 3xx responses: (\d+)", out))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return reqs, bad + (sum(int(x) for x in m.groups()) if m else 0)


def under_load(port: int, seconds: float, keepalive: bool,
               action: Callable[[float], None]) -> tuple[int, int]:
    result: list[tuple[int, int]] = []
    t = threading.Thread(target=lambda: result.append(wrk(port, seconds, keepalive)))
    t.start()
    time.sleep(0.5)
    action(seconds - 1.0)
    t.join()
    return result[0]


def churn(store: EtcdStore, keys: KeyLayout, backs: list[NamedHTTP]) -> Callable[[float], None]:
    def run(seconds: float) -> None:
        end, i, present = time.monotonic() + seconds, 0, set()
        while time.monotonic() < end:
            n = 2 + i % (len(backs) - 2)
            if n in present:
                store.delete(key(keys, WEB, f"c{n}"))
                present.discard(n)
            else:
                put_service(store, keys, WEB, f"c{n}", backs[n].port)
                present.add(n)
            i += 1
            time.sleep(0.2)
        for n in present:
            store.delete(key(keys, WEB, f"c{n}"))
    return run


def reloads(store: EtcdStore, keys: KeyLayout, backs: list[NamedHTTP], count: int,
            tag: str) -> Callable[[float], None]:
    def run(_seconds: float) -> None:
        for i in range(count):
            put_service(store, keys, f"/internal/app1/dev/{tag}r{i}", "x", backs[0].port)
            time.sleep(0.3)
    return run


def scale_down(store: EtcdStore, keys: KeyLayout, backs: list[NamedHTTP]) -> Callable[[float], None]:
    """3 → 1: two instances stop at once (their ports accept and close, as Docker's proxy
    does), then their keys go one by one, as register deletes them."""
    def run(seconds: float) -> None:
        time.sleep(seconds / 3)
        for n in (3, 4):
            backs[n].stop_container()
        time.sleep(0.05)
        for n in (3, 4):
            store.delete(key(keys, WEB, f"d{n}"))
    return run


# keep-alive reuse and throughput against a static config -----------------------------------
def static_haproxy(r: RunningListener, tmp: Path) -> tuple[subprocess.Popen[bytes], int]:
    """The same HAProxy, run from the config listen would render, servers in the file."""
    port = free_port()
    applier = r.listener.applier
    assert applier.applied is not None
    renderer = r.listener.renderer
    text = renderer.render(applier.applied, applier.slots).config
    text = text.replace(f"bind 127.0.0.1:{r.http_port}", f"bind 127.0.0.1:{port}")
    cfg = tmp / "static.cfg"
    cfg.write_text(text)
    proc = subprocess.Popen(["haproxy", "-f", str(cfg)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    wait_for(lambda: get(port, "web.dev.app1")[0] == 200, what="static haproxy")
    return proc, port


def side_by_side(r: RunningListener, backs: list[NamedHTTP], tmp: Path,
                 seconds: float) -> dict[str, str]:
    """Backend connections per request and requests/s, buoy and static alternating."""
    proc, static_port = static_haproxy(r, tmp)
    rates: dict[str, list[float]] = {"buoy": [], "static": []}
    conns: dict[str, list[float]] = {"buoy": [], "static": []}
    try:
        for _ in range(3):
            for name, port in (("buoy", r.http_port), ("static", static_port)):
                before = sum(b.connections for b in backs)
                reqs, bad = wrk(port, seconds)
                assert bad == 0, f"{bad} failed requests through {name}"
                conns[name].append((sum(b.connections for b in backs) - before) / reqs)
                rates[name].append(reqs / seconds)
    finally:
        proc.terminate()
        proc.wait(10)
    ratio = statistics.median(rates["buoy"]) / statistics.median(rates["static"])
    return {f"{n}: requests/s (wrk -c8 keep-alive, {seconds:.0f} s × 3)":
            f"median {statistics.median(rates[n]):.0f}, min {min(rates[n]):.0f}, "
            f"max {max(rates[n]):.0f}; new backend connections per request "
            f"{statistics.median(conns[n]):.4f}" for n in rates} | {
        "buoy / static requests/s": f"{ratio:.2f}"}


# 10,000 instances --------------------------------------------------------------------------
def rss_kb(pid: int) -> int:
    """Proportional set size: pages shared by HAProxy's master and worker count once."""
    try:
        m = re.search(r"^Pss:\s+(\d+)", Path(f"/proc/{pid}/smaps_rollup").read_text(), re.M)
    except OSError:
        return 0
    return int(m.group(1)) if m else 0


def children(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True)
    return [int(x) for x in out.stdout.split()]


def at_scale(etcd: EtcdServer, store: EtcdStore, tmp: Path, services: int,
             back: NamedHTTP, samples: int) -> dict[str, str]:
    """`services` × 10 instances (12-character ids), listen as its own process."""
    keys = KeyLayout("/bench-scale")
    total = services * 10
    for s in range(services):
        for i in range(10):
            put_service(store, keys, f"/internal/app1/dev/s{s}", f"{s:04x}{i:08x}", 20000 + i)
    port = free_port()
    t0 = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "buoy", "listen", "--listen-path", LISTEN, "--prefix", keys.prefix,
         "--etcd-endpoints", etcd.endpoint, "--http-bind", f"127.0.0.1:{port}",
         "--state-dir", str(tmp / "scale"), "--confirm", "0"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        last = f"s{services - 1}.dev.app1"
        # routed once the last vhost is no longer "no service" (its fake ports refuse)
        wait_for(lambda: get(port, last)[1] not in ("buoy: no service for this host", "")
                 and get(port, last)[0] != 0, timeout=300, interval=0.2,
                 what="first route at scale")
        start = time.monotonic() - t0
        changes = []
        for n in range(samples):
            iid = f"extra{n:07d}"
            t1 = time.monotonic()
            put_service(store, keys, f"/internal/app1/dev/s{n % services}", iid, back.port)
            wait_for(lambda iid=iid, n=n: get(port, f"{iid}.s{n % services}.dev.app1")[0] == 200,
                     timeout=30, interval=0.002, what="membership change at scale")
            changes.append((time.monotonic() - t1) * 1000)
            time.sleep(0.1)
        time.sleep(2)  # runtime changes written to the file; steady state
        listen_kb = rss_kb(proc.pid)
        haproxy = children(proc.pid)
        haproxy += [w for c in haproxy for w in children(c)]
        haproxy_kb = sum(rss_kb(p) for p in haproxy)
    finally:
        proc.terminate()
        proc.wait(30)
    return {f"{total:,} instances: listen start → all routed": f"{start:.1f} s",
            f"{total:,} instances: one membership change put → routable": summary(changes),
            f"{total:,} instances: memory (PSS)": f"listen {listen_kb / 1024:.0f} MB + HAProxy "
                                         f"{haproxy_kb / 1024:.0f} MB ({len(haproxy)} processes) = "
                                         f"{(listen_kb + haproxy_kb) / 1024:.0f} MB"}


# docker kill → no longer balanced, end to end ------------------------------------------------
def server_states(r: RunningListener, backend: str) -> dict[int, tuple[int, int, int]]:
    """Published port → (operational state, admin state, weight) of each filled slot."""
    deadline = time.monotonic() + 10
    while True:
        try:
            out = r.listener.haproxy.sock.command(f"@1 show servers state {backend}")
            break
        except OSError:  # the master re-executing itself for a reload
            if time.monotonic() > deadline:
                raise
            time.sleep(0.01)
    states = {}
    for line in out.splitlines():
        f = line.split()
        if len(f) > 18 and f[1] == backend and f[4] != "0.0.0.0":
            states[int(f[18])] = (int(f[5]), int(f[6]), int(f[7]))
    return states


def balanced(r: RunningListener, backend: str, port: int) -> bool:
    """HAProxy sends it requests: up, neither draining nor in maintenance (admin flags other
    than 0x04, which only says the slot was rendered `disabled`), weight > 0."""
    state = server_states(r, backend).get(port)
    return state is not None and state[0] == 2 and state[1] & ~0x04 == 0 and state[2] > 0


def instance_key(store: EtcdStore, keys: KeyLayout, port: int) -> str:
    for kv in store.get_prefix(keys.services_watch_prefix("/services/internal/kill/dev"))[1]:
        if json.loads(kv.value).get("EXT_PORT") == port:
            return kv.key
    raise AssertionError(f"no record with EXT_PORT {port}")


def docker_kills(etcd: EtcdServer, tmp: Path, kills: int, stop_runs: int = 3) -> dict[str, str]:
    """Three busybox httpd containers (ports published on 127.0.0.1) behind `buoy register`
    and listen; `kills` times: one is killed (`docker kill`) under a request loop, timed to
    its record gone from etcd and to HAProxy no longer balancing it (`show servers state`
    polled), then a new one takes its place and is up before the next kill. Then a scale
    3 → 1 as docker-compose does it (`docker stop` of two at once) under wrk, `stop_runs`
    times."""
    client = docker_client()
    image = ensure_image(client)
    keys = KeyLayout("/bench-kill")
    # a path of its own (register also records other containers of this Docker engine);
    # announced in etcd as the announce agent would, not by labels, so that the registers
    # of other prefixes on this engine leave these containers alone
    path, vhost, backend = "/internal/kill/dev/web", "web.dev.kill", "http_internal_kill_dev_web"
    announce_path = AnnouncePath.parse(path)
    env = {"ANNOUNCE_PATH": path, "PORT": "80"}
    reg = RegisterProcess(tmp / "register.log", etcd.endpoint, keys.prefix, "--host-id", "bench",
                          "--host-ip", "127.0.0.1", "--log-level", "debug").start()
    r = RunningListener(new_store(etcd), keys, tmp / "kill-state", ["/services/internal/kill/dev"],
                        drain_timeout=2.0).start()
    store = new_store(etcd)
    made: list[object] = []
    to_etcd: list[float] = []
    to_haproxy: list[float] = []
    killed: list[tuple[str, str, float]] = []  # (container ID, instance ID, wall clock of the kill)
    loops: list[Requests] = []
    try:
        reg.wait_log("docker listed containers")
        serial = itertools.count()
        stamps: dict[str, float] = {}  # container ID → Docker's own time of its kill event
        events = client.events(decode=True, filters={"label": "buoy.bench=listen",
                                                     "event": "kill"})

        def follow() -> None:
            for ev in events:
                stamps.setdefault(ev.get("id", "")[:12], ev.get("timeNano", 0) / 1e9)

        threading.Thread(target=follow, daemon=True).start()

        def start_one() -> tuple[object, int]:
            iid = f"kill{next(serial)}"
            store.put(keys.announce_key(announce_path, iid),
                      AnnounceRecord.for_path(announce_path, iid, 80, "HTTP").to_json())
            # not labelled buoy.test=1: test suites remove every such container when they end
            c = client.containers.run(
                image, ["/bin/busybox", "httpd", "-f", "-p", "80", "-h", "/www"], detach=True,
                hostname=iid, environment=env, labels={"buoy.bench": "listen"},
                ports={"80/tcp": ("127.0.0.1", None)})
            made.append(c)
            port = published_port(c)
            wait_for(lambda: balanced(r, backend, port), timeout=30, interval=0.05,
                     what=f"container on port {port} balanced")
            return c, port

        running = [start_one() for _ in range(3)]
        loops = [Requests(r.http_port, vhost, 40 + kills * 8, pause=0.002).start() for _ in range(2)]
        for i in range(kills):
            c, port = running.pop(0)
            key = instance_key(store, keys, port)
            time.sleep(0.3)
            # `docker kill` returns once the container has exited and Docker has cleaned
            # up after it (about 250 ms here): poll from the moment it is called
            killer = threading.Thread(target=c.kill)  # type: ignore[attr-defined]
            killed.append((c.id[:12], c.attrs["Config"]["Hostname"],  # type: ignore[attr-defined]
                           time.time()))
            t0 = time.monotonic()
            killer.start()
            gone_etcd = gone_haproxy = 0.0
            deadline = t0 + 10
            while time.monotonic() < deadline and not (gone_etcd and gone_haproxy):
                if not gone_etcd and store.get(key) is None:
                    gone_etcd = time.monotonic()
                if not gone_haproxy and not balanced(r, backend, port):
                    gone_haproxy = time.monotonic()
                time.sleep(0.001)  # two cores: a busy poll would slow Docker and register
            killer.join(30)
            assert gone_etcd and gone_haproxy, f"kill {i}: still balanced after 10 s"
            to_etcd.append((gone_etcd - t0) * 1000)
            to_haproxy.append((gone_haproxy - t0) * 1000)
            c.remove(force=True)  # type: ignore[attr-defined]
            made.remove(c)
            running.append(start_one())
        requests = sum(lp.ok + lp.failed for lp in loops)
        failed = sum(lp.failed for lp in loops)
        event, withdrawn = register_times(reg.log(), killed)
        events.close()
        for lp in loops:
            lp.close()
        # docker-compose's scale 3 → 1: two containers stopped at once (SIGTERM) under wrk
        stops = []
        for _ in range(stop_runs):
            result: list[tuple[int, int]] = []
            load = threading.Thread(
                target=lambda out=result: out.append(wrk(r.http_port, 6, True, vhost)))
            load.start()
            time.sleep(2)
            stopping = [threading.Thread(target=c.stop)  # type: ignore[attr-defined]
                        for c, _ in running[:2]]
            for t in stopping:
                t.start()
            for t in stopping:
                t.join(30)
            load.join()
            stops.append(result[0])
            for c, _ in running[:2]:
                c.remove(force=True)  # type: ignore[attr-defined]
                made.remove(c)
            running = running[2:] + [start_one(), start_one()]
        emitted = [(stamps[cid] - wall) * 1000 for cid, _, wall in killed if cid in stamps]
        delivered = [e - m for e, m in zip(event, emitted, strict=False)] \
            if len(emitted) == len(event) else []
    finally:
        for lp in loops:
            lp.close()
        r.stop()
        reg.terminate()
        for c in made:  # only ours: the engine is shared
            try:
                c.remove(force=True)  # type: ignore[attr-defined]
            except docker.errors.APIError:
                pass
        client.close()
        store.close()
    return {f"docker kill → record deleted from etcd (register), {kills} kills":
            summary(to_etcd),
            f"docker kill → HAProxy no longer balances it (show servers state), {kills} kills":
            summary(to_haproxy),
            "… of which: docker kill → register has the kill event": summary(event),
            "… … of which: docker kill → Docker's kill event (its own timestamp)": summary(emitted),
            "… … of which: Docker's kill event → register has it": summary(delivered),
            "… of which: kill event → register deletes the record": summary(withdrawn),
            "requests failed during the kills (2 keep-alive request loops)":
            f"{failed} / {requests}",
            f"docker stop of 2 of 3 containers at once under wrk -c8, {stop_runs} runs":
            ", ".join(f"{bad} failed / {req}" for req, bad in stops) + " requests"}


def register_times(log_text: str,
                   killed: list[tuple[str, str, float]]) -> tuple[list[float], list[float]]:
    """From register's debug log: ms from each kill to its `docker event action=kill` line,
    and from that line to its `withdraw key=.../services/...` line."""
    def stamp(line: str) -> float:
        return datetime.datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()

    event, withdrawn = [], []
    lines = log_text.splitlines()
    for cid, iid, wall in killed:
        got = [stamp(ln) for ln in lines if f"action=kill id={cid}" in ln]
        out = [stamp(ln) for ln in lines if "withdraw key=" in ln and "/services/" in ln
               and ln.rstrip().endswith("/" + iid)]
        if got and out:
            event.append((got[0] - wall) * 1000)
            withdrawn.append((out[0] - got[0]) * 1000)
    return event, withdrawn


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--samples", type=int, default=60)
    ap.add_argument("--load-seconds", type=float, default=20)
    ap.add_argument("--reloads", type=int, default=20)
    ap.add_argument("--services", type=int, default=1000)
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--scale-downs", type=int, default=5)
    ap.add_argument("--only", choices=("kills", "scale"),
                    help="run one part and print it, writing nothing")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="buoy-bench-listen-"))
    load_before = os.getloadavg()[0]
    etcd = EtcdServer(tmp / "etcd").start()
    if args.only:
        try:
            part = (docker_kills(etcd, tmp, args.kills) if args.only == "kills" else
                    at_scale(etcd, new_store(etcd), tmp, args.services, NamedHTTP("b0"), 20))
        finally:
            etcd.stop()
        print("\n".join(f"| {k} | {v} |" for k, v in part.items()))
        return
    store = new_store(etcd)
    backs = [NamedHTTP(f"b{i}") for i in range(6)]
    rows: dict[str, str] = {}
    try:
        keys = KeyLayout("/bench-r")
        for n in (0, 1):
            put_service(store, keys, WEB, f"a{n}", backs[n].port)
        r = listener(etcd, keys, tmp / "state", max_drop=50.0, confirm=10.0)
        lat = latency(store, keys, r, backs, args.samples, "r")
        rows["membership put → routable"] = summary(lat["put"])
        rows["delete → no longer balanced"] = summary(lat["delete"])
        rows["new service put → routable (a reload)"] = summary(lat["service"])
        rows.update(side_by_side(r, backs[:2], tmp, 5))
        for ka in (True, False):
            label = "keep-alive" if ka else "Connection: close"
            req, bad = under_load(r.http_port, args.load_seconds, ka, churn(store, keys, backs))
            rows[f"churn (a change every 200 ms), {label}"] = f"{bad} failed / {req} requests"
            req, bad = under_load(r.http_port, args.reloads * 0.3 + 2, ka,
                                  reloads(store, keys, backs, args.reloads, f"k{int(ka)}"))
            rows[f"{args.reloads} reloads, {label}"] = f"{bad} failed / {req} requests"
        store.delete(key(keys, WEB, "a1"))
        downs = []
        for _ in range(args.scale_downs):
            for n in (3, 4):
                backs[n].dead = False
                put_service(store, keys, WEB, f"d{n}", backs[n].port)
            wait_for(lambda: {get(r.http_port, "web.dev.app1")[1] for _ in range(12)}
                     == {"b0", "b3", "b4"}, what="three instances routed")
            time.sleep(1)
            downs.append(under_load(r.http_port, 6, True, scale_down(store, keys, backs)))
        rows[f"scale 3 → 1 under load (ports accept and close), guard on, {args.scale_downs} runs"] = \
            ", ".join(f"{bad} failed / {req}" for req, bad in downs) + \
            f" requests; held: {r.listener.guard.holds_total}"
        rows["HAProxy reloads during the run"] = str(r.listener.haproxy.reloads)
        r.stop()
        for b in backs:
            b.dead = False
        naive_keys = KeyLayout("/bench-n")
        for n in (0, 1):
            put_service(store, naive_keys, WEB, f"a{n}", backs[n].port)
        naive = listener(etcd, naive_keys, tmp / "naive", naive=True)
        nlat = latency(store, naive_keys, naive, backs, args.samples // 2, "n")
        naive.stop()
        rows["naive (reload every change): membership put → routable"] = summary(nlat["put"])
        rows.update(at_scale(etcd, store, tmp, args.services, backs[0], 20))
        rows.update(docker_kills(etcd, tmp, args.kills))
        ratio = percentile(nlat["put"], 0.99) / percentile(lat["put"], 0.99)
    finally:
        for b in backs:
            b.close()
        store.close()
        etcd.stop()
    body = ["## buoy listen", "",
            "wrk -t1 -c8 (bounded load) against Python backends on 127.0.0.1; failed = non-2xx/3xx "
            "+ socket errors. Latencies are one change at a time; a route counts as there when "
            "its pinned host answers, an instance as gone when 8 answers in a row come from the "
            "others.", "", "| measure | figure |", "|---|---|"]
    body += [f"| {k} | {v} |" for k, v in rows.items()]
    body += ["", f"Naive / buoy listen, membership put → routable p99: {ratio:.1f}×.", "",
             f"The machine's 1-minute load average (2 cores, shared): {load_before:.2f} before "
             f"the run, {os.getloadavg()[0]:.2f} after it.", "",
             "The docker kill rows use busybox httpd containers with ports published on "
             "127.0.0.1, `buoy register` (its own process) and listen on one etcd; the time "
             "runs from the call of `docker kill` (which itself returns only after Docker has "
             "cleaned up, about 250 ms later) to `show servers state` showing the server "
             "drained, polled every millisecond. The two rows below it split the first part "
             "with register's own log (debug level)."]
    print("\n".join(body))
    write_section("listen", "\n".join(body))


if __name__ == "__main__":
    main()
