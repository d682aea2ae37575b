"""Multi-host figures: three Docker hosts as network namespaces (tests/hosts.py), each with
its own engine, register (--ttl 3) and listen frontend, a 3-member etcd cluster.

- container started on host h1 → routed on h2's frontend (pinned request answered)
- host h1 killed hard (link down, SIGKILL of engine, agents, containers) with an etcd
  follower lost → removed from every other frontend, /services and DNS; failed requests
  of a load through the other frontends; h1 back → routed again

Writes the `multi-host` section of docs/benchmarks.md.

    python bench/cluster.py [--starts 30] [--kills 5]
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# bench/dns.py would hide dnspython (`import dns`): keep bench/ off the path.
sys.path[:] = [str(ROOT), str(ROOT / "tests"),
               *(p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench")]

from etcd_server import wait_for  # noqa: E402
from hosts import (  # noqa: E402
    HTTP_PORT,
    WEB_PATH,
    WEB_VHOST,
    Cluster,
    Host,
    Load,
    dns_web,
    http_get,
    services,
    store_for,
)

_spec = importlib.util.spec_from_file_location("report", ROOT / "bench" / "report.py")
assert _spec is not None and _spec.loader is not None
report = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(report)


def start_to_routed(cluster: Cluster, a: Host, b: Host, n: int) -> tuple[list[float], list[float]]:
    """ms from the run call of a label-only container on `a` to its first answer via `b`,
    and from the return of that call (the container started) to that answer."""
    out, after_run = [], []
    for i in range(n):
        name = f"s{i}"
        start = time.monotonic()
        cluster.run_service(a, name, WEB_PATH, 80, "HTTP")
        started = time.monotonic()

        def answered(name: str = name) -> bool:
            status, body = http_get(b.ip, HTTP_PORT, f"{name}.{WEB_VHOST}", timeout=5)
            return status == 200 and f"{name} on {a.name}" in body

        wait_for(answered, 30, interval=0.005, what=f"{name} routed via {b.name}")
        out.append((time.monotonic() - start) * 1000)
        after_run.append((time.monotonic() - started) * 1000)
        client = a.client()
        try:
            client.containers.get(name).remove(force=True)
        finally:
            client.close()
        a.containers.pop(name, None)

        def removed(name: str = name) -> bool:
            return name not in services(store_for_cluster(cluster))

        wait_for(removed, 30, interval=0.05, what=f"{name} removed")
    return out, after_run


_stores: dict[str, Any] = {}


def store_for_cluster(cluster: Cluster) -> Any:
    if cluster.endpoints not in _stores:
        _stores[cluster.endpoints] = store_for(cluster.endpoints)
    return _stores[cluster.endpoints]


def host_kill(cluster: Cluster, victim: Host) -> dict[str, float]:
    others = [h for h in cluster.hosts if h is not victim]
    store = store_for_cluster(cluster)
    facts: dict[str, float] = {}
    with Load(others) as load:
        wait_for(lambda: load.sent >= 20, 20, what="load running")
        member = cluster.stop_etcd_member()
        killed = time.monotonic()
        cluster.kill_host(victim)
        seen: dict[str, float] = {}

        def gone() -> bool:
            for f in others:
                if f.name not in seen and not any(a.startswith(f"{victim.ip}:")
                                                  for a in f.frontend_routes()):
                    seen[f.name] = time.monotonic() - killed
            if "services" not in seen and all(h != victim.name
                                              for h, _, _ in services(store).values()):
                seen["services"] = time.monotonic() - killed
            if "dns" not in seen and victim.ip not in dns_web(cluster.dns_port)[0]:
                seen["dns"] = time.monotonic() - killed
            return len(seen) == len(others) + 2

        wait_for(gone, 60, interval=0.02, what=f"{victim.name} removed everywhere")
        facts["frontends"] = max(seen[f.name] for f in others)
        facts["everywhere"] = max(seen.values())
        after = load.sent
        wait_for(lambda: load.sent >= after + 20, 30, what="requests after the removal")
    facts.update(sent=load.sent, failed=load.failed, slowest=load.slowest)
    member.start()
    back = time.monotonic()
    cluster.restore_host(victim)
    cluster.wait_routed(cluster.hosts, [victim], 60)
    facts["back"] = time.monotonic() - back
    return facts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--starts", type=int, default=30)
    parser.add_argument("--kills", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="buoy-bench-cluster-") as tmp:
        cluster = Cluster(Path(tmp), register_ttl=3, log=lambda *a: print(*a, flush=True))
        try:
            cluster.start()
            h1, h2, _ = cluster.hosts
            starts, after_run = start_to_routed(cluster, h1, h2, args.starts)
            print("start on h1 -> routed on h2:", report.summary(starts), [round(x) for x in starts],
                  flush=True)
            kills = []
            for k in range(args.kills):
                kills.append(host_kill(cluster, h1))
                print(f"kill {k}: {kills[-1]}", flush=True)
        finally:
            for s in _stores.values():
                s.close()
            cluster.close()
    sent = sum(int(k["sent"]) for k in kills)
    failed = sum(int(k["failed"]) for k in kills)
    frontends = report.summary([k["frontends"] for k in kills], "s")
    everywhere = report.summary([k["everywhere"] for k in kills], "s")
    back = report.summary([k["back"] for k in kills], "s")
    slowest = max(k["slowest"] for k in kills)
    rows = [
        ("container started on h1 → routed by h2's frontend (a pinned request answered)",
         report.summary(starts), "p99 < 1 s"),
        ("… of which from the container started (the run call returned) to routed",
         report.summary(after_run), ""),
        ("h1 killed hard (and an etcd follower) → gone from every other frontend", frontends,
         "≤ TTL + 1 s = 4 s"),
        ("h1 killed → gone from every other frontend, /services and DNS", everywhere,
         "≤ TTL + 1 s = 4 s"),
        ("requests through the two other frontends during the kills",
         f"{failed} failed of {sent} (slowest {slowest:.1f} s)", "0 failed"),
        ("h1 back (link up, engine, register, listen) → routed by every frontend", back, ""),
    ]
    table = "\n".join(f"| {a} | {b} | {c} |" for a, b, c in rows)
    body = f"""## multi-host

Three Docker hosts made on one machine as network namespaces on a bridge of their own
(`tests/hosts.py`, the harness of `bash demo/cluster.sh` and `tests/test_multihost_e2e.py`):
each runs its own dockerd, `buoy register --host-ip <its address> --ttl 3` and a `buoy listen`
frontend; etcd is a 3-member cluster. Containers are label-only busybox httpd's published
on their host's address. {args.kills} host kills, {args.starts} container starts. See
[multihost.md](multihost.md).

| measure | result | target |
|---|---|---|
{table}

The start figure includes Docker's create and start of the container (the timer starts
before the API call); the second row is buoy's part: register sees the start event,
writes the label announce and the service record, and h2's listen fills a server slot
through the runtime API. A request that HAProxy sends to the dead host waits for its 3 s
connect timeout and is then retried on another server: slow, not failed. The load sends
one request at a time; one in flight to the host at the moment it dies gets no answer
(HAProxy would wait `timeout server`, 60 s; the client gives up after 10 s) and counts
as failed. Losing the etcd *leader* instead of a follower adds the election and one more
TTL (a new leader renews every lease).
"""
    report.write_section("multi-host", body)


if __name__ == "__main__":
    main()
