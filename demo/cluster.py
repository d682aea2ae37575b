"""The multi-host demo (run through `bash demo/cluster.sh`): three Docker hosts made on this
machine as network namespaces (tests/hosts.py), each with its own engine, `buoy register`
and `buoy listen` frontend, one three-member etcd cluster and `buoy dns`.

It shows containers of one host routed by the frontends of the others, DNS answering
with host IPs and published ports, a container on every host reaching the db on another
host through its host's ambassador port, then a whole host killed (with an etcd member)
under load, and the host back. Everything it made is undone on exit, Ctrl-C included.

    python3 demo/cluster.py [--state DIR] [--keep]
    python3 demo/cluster.py --cleanup DIR/manifest.json   # undo an interrupted run
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from hosts import (  # noqa: E402
    HTTP_PORT,
    WEB_NAME,
    WEB_VHOST,
    Cluster,
    Load,
    cleanup,
    http_get,
)

T0 = time.monotonic()


def say(text: str) -> None:
    print(f"\n\033[1m== {text}\033[0m", flush=True)


def info(*parts: object) -> None:
    print(f"[{time.monotonic() - T0:6.1f}s]", *parts, flush=True)


def dig(port: int, *query: str) -> None:
    out = subprocess.run(["dig", "+norec", "+noall", "+answer", "@127.0.0.1", "-p", str(port),
                          *query], capture_output=True, text=True).stdout
    print(out.rstrip() or "(no answer)", flush=True)


def demo(cluster: Cluster, keep: bool) -> None:
    say("three hosts: a network namespace each, its own dockerd, register and listen")
    cluster.start()
    for h in cluster.hosts:
        info(f"{h.name}: {h.ip}, engine {h.url} (docker0 {h.bip}), frontend {h.ip}:{HTTP_PORT}, "
             f"ambassador {h.gateway}")
    h1, h2, h3 = cluster.hosts

    say("buoy ls")
    subprocess.run([sys.executable, "-m", "buoy", "ls", "--etcd-endpoints", cluster.endpoints],
                   check=False)

    say("every frontend routes every host's container (pinned by ID: Host: web-hN.web.dev.app1)")
    for f in cluster.hosts:
        answers = [http_get(f.ip, HTTP_PORT, f"web-{w.name}.{WEB_VHOST}")[1].strip()
                   for w in cluster.hosts]
        print(f"  frontend {f.name} ({f.ip}:{HTTP_PORT}): " + " | ".join(answers))
    print(f"  round robin through {h2.name}'s frontend (Host: {WEB_VHOST}):")
    for _ in range(6):
        print("   ", http_get(h2.ip, HTTP_PORT, WEB_VHOST)[1].strip())

    say(f"DNS: host IPs and published ports (dig @127.0.0.1 -p {cluster.dns_port})")
    dig(cluster.dns_port, WEB_NAME, "SRV")
    dig(cluster.dns_port, WEB_NAME, "A")

    say("the db (TCP, on h2 and h3) from a container on each host, through its ambassador port")
    for h in cluster.hosts:
        seen: set[str] = set()
        for _ in range(6):
            rc, out = cluster.ambassador(h, f"web-{h.name}")
            lines = out.strip().splitlines()
            if rc == 0 and lines:
                seen.add(lines[-1])
        print(f"  web-{h.name} -> {h.gateway}:7000 -> {sorted(seen)}")

    say(f"host h1 killed hard (link down, SIGKILL engine, agents, containers) and etcd member "
        f"lost, under load through {h2.name} and {h3.name}; register's TTL is "
        f"{cluster.register_ttl} s")
    with Load([h2, h3]) as load:
        time.sleep(1)
        member = cluster.stop_etcd_member()
        info(f"etcd member {member.name} killed (SIGKILL, a follower)")
        killed_at = time.monotonic()
        n = cluster.kill_host(h1)
        info(f"h1: link down, {n} processes killed")
        gone: dict[str, float] = {}
        deadline = killed_at + 30
        while len(gone) < 2 and time.monotonic() < deadline:
            for f in (h2, h3):
                if f.name not in gone and not any(
                        a.startswith(f"{h1.ip}:") for a in f.frontend_routes()):
                    gone[f.name] = time.monotonic() - killed_at
                    info(f"web-h1 left {f.name}'s frontend {gone[f.name]:.2f} s after the kill")
            time.sleep(0.05)
        time.sleep(1)
    print(f"  requests during the host kill: {load.sent - load.failed} ok, {load.failed} failed "
          f"(slowest {load.slowest:.1f} s: a request sent to the dead host is retried on "
          f"another after HAProxy's 3 s connect timeout)")
    for err in load.errors[:5]:
        print("   ", err)
    dig(cluster.dns_port, WEB_NAME, "A")

    say("h1 back: link up, its engine (containers restart by policy), register and listen")
    member.start()
    back = time.monotonic()
    cluster.restore_host(h1)
    cluster.wait_routed([h2, h3, h1], [h1], 60)
    info(f"web-h1 routed again by every frontend {time.monotonic() - back:.2f} s after h1 came "
         f"back; nothing else was restarted (etcd member {member.name} is back too)")
    for f in cluster.hosts:
        print(f"  frontend {f.name}: {http_get(f.ip, HTTP_PORT, 'web-h1.' + WEB_VHOST)[1].strip()}")

    if keep:
        say(f"running (state in {cluster.work}); Ctrl-C to stop and clean up")
        while True:
            time.sleep(3600)
    say("demo OK")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--state", default=str(ROOT / ".state" / "cluster"))
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--cleanup", metavar="MANIFEST")
    args = parser.parse_args()
    if args.cleanup:
        cleanup(Path(args.cleanup))
        return

    def on_term(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGHUP, on_term)
    cluster = Cluster(Path(args.state), log=info)
    try:
        demo(cluster, args.keep)
    except KeyboardInterrupt:
        print("\ninterrupted", flush=True)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):  # nothing stops the cleanup
            signal.signal(sig, signal.SIG_IGN)
        say("cleaning up: containers, daemons, namespaces, bridge, iptables rule")
        cluster.close()


if __name__ == "__main__":
    main()
