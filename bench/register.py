"""Benchmark `buoy register` against the real Docker Engine and a real etcd on loopback.

    python bench/register.py [--samples 100] [--kills 30] [--burst 100]

Measures, with `buoy register` as a subprocess (resync 600 s, so only the watch
and Docker events can be what reacts):
1. announce put → its /services record written (p50, p99);
2. `docker kill` → the record removed (p50, p99);
3. `--burst` containers started at once (announces written first) → all registered.
Times come from an etcd watch on /services, so polling adds no delay. Every
container is labelled buoy.test=1 and removed at the end.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "bench")]

from docker_helpers import (  # noqa: E402
    RegisterProcess,
    docker_client,
    ensure_image,
    remove_test_containers,
    run_httpd,
)
from etcd_server import EtcdServer, wait_for  # noqa: E402
from report import percentile, summary, write_section  # noqa: E402

from buoy.etcd.keys import KeyLayout  # noqa: E402
from buoy.etcd.records import AnnouncePath, AnnounceRecord  # noqa: E402
from buoy.etcd.settings import EtcdSettings  # noqa: E402
from buoy.etcd.store import EtcdStore, StoreError, WatchBatch  # noqa: E402

PATH = AnnouncePath.parse("/internal/bench/dev/web")
ENV = {"ANNOUNCE_PATH": str(PATH), "PORT": "80"}


class KeyTimes:
    """When each key under a prefix was last put or deleted, from an etcd watch."""

    def __init__(self, store: EtcdStore, prefix: str) -> None:
        self.puts: dict[str, float] = {}
        self.deletes: dict[str, float] = {}
        self._lock = threading.Lock()
        self.cancel = store.watch_prefix(prefix, store.revision() + 1, self._on)

    def _on(self, item: WatchBatch | StoreError) -> None:
        now = time.monotonic()
        if isinstance(item, StoreError):
            return
        with self._lock:
            for ev in item.events:
                (self.puts if ev.kind == "put" else self.deletes)[ev.key] = now

    def put_after(self, key: str, t0: float) -> float | None:
        with self._lock:
            t = self.puts.get(key)
        return t if t is not None and t >= t0 else None

    def delete_after(self, key: str, t0: float) -> float | None:
        with self._lock:
            t = self.deletes.get(key)
        return t if t is not None and t >= t0 else None


def announce(store: EtcdStore, keys: KeyLayout, name: str) -> None:
    store.put(keys.announce_key(PATH, name), AnnounceRecord.for_path(PATH, name, 80, "HTTP").to_json())


def put_latency(store: EtcdStore, keys: KeyLayout, times: KeyTimes, client: Any,
                samples: int) -> list[float]:
    names = [f"lat-{i}" for i in range(min(samples, 20))]
    for name in names:
        run_httpd(client, hostname=name, env=ENV)
    out = []
    for i in range(samples):
        name = names[i % len(names)]
        skey = keys.service_key(PATH, name)
        t0 = time.monotonic()
        announce(store, keys, name)
        t1 = wait_for(lambda k=skey, t=t0: times.put_after(k, t), 10, interval=0.001,
                      what="service record")
        out.append((t1 - t0) * 1000)
        t2 = time.monotonic()
        store.delete(keys.announce_key(PATH, name))
        wait_for(lambda k=skey, t=t2: times.delete_after(k, t), 10, interval=0.001,
                 what="record removed")
    return out


def kill_latency(store: EtcdStore, keys: KeyLayout, times: KeyTimes, client: Any,
                 kills: int) -> list[float]:
    made = {}
    for i in range(kills):
        name = f"kill-{i}"
        made[name] = run_httpd(client, hostname=name, env=ENV)
        announce(store, keys, name)
    for name in made:
        skey = keys.service_key(PATH, name)
        wait_for(lambda k=skey: store.get(k), 20, what="registered")
    out = []
    for name, container in made.items():
        skey = keys.service_key(PATH, name)
        t0 = time.monotonic()
        container.kill()
        t1 = wait_for(lambda k=skey, t=t0: times.delete_after(k, t), 10, interval=0.001,
                      what="record removed")
        out.append((t1 - t0) * 1000)
    return out


def burst(store: EtcdStore, keys: KeyLayout, times: KeyTimes, client: Any,
          count: int) -> tuple[float, float, list[float]]:
    """Create `count` containers, then start them all at once (16 parallel start calls).

    Returns: first start call → all registered (s), last start returned → all
    registered (s), and per container start returned → registered (ms).
    """
    names = [f"burst-{i}" for i in range(count)]
    made = [run_httpd(client, hostname=n, env=ENV, start=False) for n in names]
    for name in names:
        announce(store, keys, name)
    returned: dict[str, float] = {}

    def start(pair: tuple[str, Any]) -> None:
        pair[1].start()
        returned[pair[0]] = time.monotonic()

    t0 = time.monotonic()
    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(start, zip(names, made, strict=True)))
    started = time.monotonic()
    skeys = {n: keys.service_key(PATH, n) for n in names}
    wait_for(lambda: all(times.put_after(k, t0) for k in skeys.values()), 60, interval=0.005,
             what="all registered")
    at = {n: times.put_after(k, t0) or 0.0 for n, k in skeys.items()}
    each = [max(0.0, at[n] - returned[n]) * 1000 for n in names]
    done = max(at.values())
    return done - t0, max(0.0, done - started), each


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--samples", type=int, default=100)
    parser.add_argument("--kills", type=int, default=30)
    parser.add_argument("--burst", type=int, default=100)
    args = parser.parse_args()
    client = docker_client()
    ensure_image(client)
    with tempfile.TemporaryDirectory() as tmp_text:
        tmp = Path(tmp_text)
        server = EtcdServer(tmp / "etcd").start()
        store = EtcdStore(EtcdSettings.from_strings(server.endpoint))
        keys = KeyLayout("/bench-register")
        reg = RegisterProcess(tmp / "buoy.register.log", server.endpoint, keys.prefix,
                              "--host-id", "bench", "--host-ip", "127.0.0.1",
                              "--resync", "600").start()
        times = KeyTimes(store, keys.services_root)
        try:
            reg.wait_log("docker listed containers")
            put = put_latency(store, keys, times, client, args.samples)
            remove_test_containers(client)
            kill = kill_latency(store, keys, times, client, args.kills)
            remove_test_containers(client)
            total, after_start, each = burst(store, keys, times, client, args.burst)
        finally:
            times.cancel()
            reg.terminate()
            remove_test_containers(client)
            store.close()
            server.stop()
    burst_text = (f"{total:.2f} s from the first start call to the last record; "
                  f"{after_start:.2f} s after the last start returned")
    body = f"""## buoy register

Real Docker Engine ({client.version().get('Version', '?')}) and etcd on loopback;
register as a subprocess with `--resync 600`, so only the etcd watch and the Docker
event stream react. Times are taken from an etcd watch on `/services`.

| measure | result | target |
|---|---|---|
| announce put → /services record | {summary(put)} | p99 < 500 ms |
| `docker kill` → record removed | {summary(kill)} | p99 < 1 s |
| {args.burst} containers started at once → all registered | {burst_text} | < 5 s |
| in that burst, each container's start returned → its record | {summary(each)} | |

The containers of the burst are created first and then started with 16 parallel
`start` calls; the time until Docker has started them all is part of the first figure.
"""
    write_section("register", body)
    print(body)
    print(f"put p99={percentile(put, 0.99):.1f}ms kill p99={percentile(kill, 0.99):.1f}ms "
          f"burst={total:.2f}s")
    client.close()


if __name__ == "__main__":
    main()
