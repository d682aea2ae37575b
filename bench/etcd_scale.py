"""What etcd pays for buoy's load: lease keep-alives, watchers, churn, whole-prefix reads,
and what `etcd grpc-proxy` changes.

    python bench/etcd_scale.py [--window 20] [--records 100000] [--quick] [--only TEXT]

Starts a private etcd (Debian's etcd-server 3.4) on free loopback ports for each group
of cells, and for some cells `etcd grpc-proxy` processes in front of it. The client load
comes from worker processes of this same script (asyncio + grpc.aio, or raw HTTP/1.1 for
the JSON gateway), whose CPU is measured too, so it is known how much of the 2 cores they
took from etcd. About 10 minutes.

Cells (each: one refresh period of warm-up, then `--window` seconds measured in 5 s
samples; etcd's CPU is user + system from /proc/<pid>/stat):

* leases: 1,000 and 5,000 live leases (TTL 15 s), each refreshed every 5 s, spread
  evenly, as announce does: through the JSON gateway (a POST to /v3/lease/keepalive on
  a kept-open HTTP/1.1 connection per holder), over gRPC (one connection and one
  LeaseKeepAlive stream per holder), over gRPC through one grpc-proxy, through 100
  proxies of 50 holders each (one per host), and through those 100 chained to one
  shared proxy;
* watch: with 1,000 leases held over gRPC, N watchers of one prefix (every watcher
  sees every event, as every register's /announce watch does) and a churn of puts/s
  under it; fan-out latency is put sent → each watcher notified (the put's send time
  travels in the value; CLOCK_MONOTONIC is one clock for all processes); the same
  through one grpc-proxy, and through 10 host proxies chained to one shared proxy;
* combined: 5,000 leases + 100 watchers + 100 puts/s, to check that the costs add;
* reads: one read of a prefix holding `--records` service records, the way buoy pages
  it (EtcdStore.get_prefix), as one Range, and as bounded pages after a keys-only read.

What etcd saw comes from its /metrics: keep-alives (etcd_debugging_lease_renewed_total),
gRPC calls started (grpc_server_started_total: unary requests and new streams),
watchers and watch streams (etcd_debugging_mvcc_watcher_total, _watch_stream_total),
puts (etcd_debugging_mvcc_put_total) and events sent to watchers
(etcd_debugging_mvcc_events_total). Writes the `etcd at scale` section of
docs/benchmarks.md (docs/scale.md explains and extrapolates the figures); `--quick` and
`--only` print it instead.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import select
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from array import array
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "bench")]

from etcd_server import EtcdServer  # noqa: E402
from grpc_proxy import GrpcProxy  # noqa: E402

TTL = 15
PERIOD = 5.0
SAMPLE = 5.0
TICKS = os.sysconf("SC_CLK_TCK")
VALUE_PAD = 160  # a service record is about 200 bytes of JSON
GRPC_OPTIONS = [("grpc.use_local_subchannel_pool", 1)]  # a connection per channel, as per process


# --- measuring ---------------------------------------------------------------------------
def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


METRIC = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)$")


def scrape(base: str) -> dict[str, float]:
    """The counters this benchmark reads from etcd's (or the proxy's) /metrics."""
    with urllib.request.urlopen(f"{base}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        m = METRIC.match(line)
        if not m:
            continue
        name, labels, value = m.group(1), m.group(2) or "", float(m.group(3))
        if name == "grpc_server_started_total":
            out["calls"] = out.get("calls", 0) + value
            method = re.search(r'grpc_method="([^"]+)"', labels)
            if method:
                out[f"calls:{method.group(1)}"] = out.get(f"calls:{method.group(1)}", 0) + value
        elif name == "grpc_server_msg_received_total" and 'grpc_method="LeaseKeepAlive"' in labels:
            out["keepalive_msgs"] = value
        elif name in ("etcd_debugging_lease_renewed_total", "etcd_debugging_mvcc_watcher_total",
                      "etcd_debugging_mvcc_watch_stream_total", "etcd_debugging_mvcc_put_total",
                      "etcd_debugging_mvcc_events_total", "etcd_debugging_mvcc_delete_total"):
            out[name.replace("etcd_debugging_", "")] = value
    return out


def pct(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))] if ordered else 0.0


# --- workers (run as `etcd_scale.py --worker KIND ...`) ----------------------------------
def stubs() -> Any:
    import grpc  # only workers load gRPC
    from etcd3.etcdrpc import rpc_pb2, rpc_pb2_grpc
    return grpc, rpc_pb2, rpc_pb2_grpc


def say(**what: Any) -> None:
    print(json.dumps(what), flush=True)


class Window:
    """The measured window, told by the orchestrator on stdin once every worker is ready."""

    def __init__(self) -> None:
        self.start = self.end = float("inf")
        self.known = asyncio.Event()

    async def receive(self) -> None:
        line = await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        told = json.loads(line)
        self.start, self.end = float(told["from"]), float(told["to"])
        self.known.set()

    @property
    def stop_at(self) -> float:
        return self.end + 1


async def wait_until(t: float) -> None:
    delay = t - time.monotonic()
    if delay > 0:
        await asyncio.sleep(delay)


async def paced(first: float, window: Window, rec: Recorder,
                refresh: Callable[[], Awaitable[bool]], renew: Callable[[], None]) -> None:
    """One holder's keep-alives: one every PERIOD from `first` until the window ends, each
    timed and counted by `rec`; a failed one is counted, then `renew` starts afresh."""
    k = 0
    while (due := first + k * PERIOD) < window.stop_at:
        await wait_until(due)
        sent = time.monotonic()
        try:
            rec.note(sent, await refresh())
        except Exception:  # noqa: BLE001 - counted as failed, then renewed
            rec.note(sent, False)
            renew()
        k += 1


class Recorder:
    """Keep-alive answers: counts and latencies, only inside the measured window."""

    def __init__(self, window: Window) -> None:
        self.window = window
        self.sent = self.failed = 0
        self.latency = array("d")

    def note(self, sent_at: float, ok: bool) -> None:
        if not self.window.start <= sent_at < self.window.end:
            return
        self.sent += 1
        if ok:
            self.latency.append(time.monotonic() - sent_at)
        else:
            self.failed += 1

    def report(self) -> dict[str, Any]:
        lat = list(self.latency)
        return {"refreshes": self.sent, "failed": self.failed,
                "latency_p50_ms": 1000 * pct(lat, 0.5), "latency_p99_ms": 1000 * pct(lat, 0.99),
                "latency_max_ms": 1000 * max(lat, default=0.0)}


async def grpc_leases(args: argparse.Namespace) -> None:
    grpc, pb, pbg = stubs()
    window = Window()
    rec = Recorder(window)
    targets = args.target.split(",")  # holder i talks to targets[i % len]: one proxy per host
    channels = [grpc.aio.insecure_channel(targets[i % len(targets)], options=GRPC_OPTIONS)
                for i in range(args.count)]
    grant_sem = asyncio.Semaphore(64)

    async def grant(ch: Any) -> int:
        async with grant_sem:
            reply = await pbg.LeaseStub(ch).LeaseGrant(pb.LeaseGrantRequest(TTL=TTL), timeout=30)
            return int(reply.ID)

    leases = await asyncio.gather(*(grant(ch) for ch in channels))
    told = asyncio.ensure_future(window.receive())
    say(ready=True, leases=len(leases))
    start = time.monotonic()
    step = PERIOD / max(1, args.count)

    async def holder(i: int) -> None:
        call = pbg.LeaseStub(channels[i]).LeaseKeepAlive()

        async def refresh() -> bool:
            await call.write(pb.LeaseKeepAliveRequest(ID=leases[i]))
            reply = await asyncio.wait_for(call.read(), 10)
            return int(reply.TTL) > 0

        def renew() -> None:  # after a failure: a new stream
            nonlocal call
            call.cancel()
            call = pbg.LeaseStub(channels[i]).LeaseKeepAlive()

        await paced(start + i * step, window, rec, refresh, renew)
        call.cancel()

    await asyncio.gather(*(holder(i) for i in range(args.count)))
    await told
    say(**rec.report())
    await asyncio.gather(*(ch.close() for ch in channels))


class HTTPConn:
    """One kept-open HTTP/1.1 connection to etcd's JSON gateway (what EtcdGateway does)."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        data = json.dumps(body).encode()
        self.writer.write(f"POST {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
                          f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n"
                          .encode() + data)
        status = await self.reader.readline()
        if not status.startswith(b"HTTP/1.1 200"):
            raise ConnectionError(status.decode(errors="replace").strip())
        headers: dict[str, str] = {}
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode().partition(":")
            headers[name.strip().lower()] = value.strip()
        if "chunked" in headers.get("transfer-encoding", ""):
            raw = b""
            while (size := int((await self.reader.readline()).split(b";")[0] or b"0", 16)):
                raw += await self.reader.readexactly(size)
                await self.reader.readline()
            await self.reader.readline()
        else:
            raw = await self.reader.readexactly(int(headers.get("content-length", "0")))
        reply = json.loads(raw.splitlines()[0]) if raw.strip() else {}
        return reply if isinstance(reply, dict) else {}

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


async def gateway_leases(args: argparse.Namespace) -> None:
    host, port = args.target.rsplit(":", 1)
    window = Window()
    rec = Recorder(window)
    conns = [HTTPConn(host, int(port)) for _ in range(args.count)]
    sem = asyncio.Semaphore(64)

    async def grant(conn: HTTPConn) -> int:
        async with sem:
            return int((await conn.post("/v3/lease/grant", {"TTL": TTL}))["ID"])

    leases = await asyncio.gather(*(grant(c) for c in conns))
    told = asyncio.ensure_future(window.receive())
    say(ready=True, leases=len(leases))
    start = time.monotonic()
    step = PERIOD / max(1, args.count)

    async def holder(i: int) -> None:
        async def refresh() -> bool:
            reply = await asyncio.wait_for(
                conns[i].post("/v3/lease/keepalive", {"ID": str(leases[i])}), 10)
            return int(reply.get("result", reply).get("TTL", 0)) > 0

        # after a failure the connection is closed; the next post opens a new one
        await paced(start + i * step, window, rec, refresh, conns[i].close)
        conns[i].close()

    await asyncio.gather(*(holder(i) for i in range(args.count)))
    await told
    say(**rec.report())


async def watchers(args: argparse.Namespace) -> None:
    """`count` watchers of `prefix`, one stream each, spread over a channel per 10."""
    grpc, pb, pbg = stubs()
    targets = args.target.split(",")  # connection j talks to targets[j % len]
    channels = [grpc.aio.insecure_channel(targets[j % len(targets)], options=GRPC_OPTIONS)
                for j in range((args.count + 9) // 10)]
    key = args.prefix.encode()
    end = key[:-1] + bytes([key[-1] + 1])
    latency = array("d")
    events = 0
    created = 0
    all_created = asyncio.Event()
    window = Window()

    async def watch(i: int) -> None:
        nonlocal events, created
        call = pbg.WatchStub(channels[i // 10]).Watch()
        await call.write(pb.WatchRequest(create_request=pb.WatchCreateRequest(key=key,
                                                                             range_end=end)))
        async for resp in call:
            if resp.created:
                created += 1
                if created == args.count:
                    all_created.set()
            now = time.monotonic()
            for ev in resp.events:
                sent = float(ev.kv.value[:20])
                if window.start <= sent < window.end:
                    latency.append(now - sent)
                    events += 1
            if now > window.end + 2:
                break
        call.cancel()

    tasks = [asyncio.ensure_future(watch(i)) for i in range(args.count)]
    await asyncio.wait_for(all_created.wait(), 60)
    say(ready=True, watchers=created)
    await window.receive()
    await wait_until(window.end + 2)
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    lat = list(latency)
    say(events=events, latency_p50_ms=1000 * pct(lat, 0.5), latency_p99_ms=1000 * pct(lat, 0.99),
        latency_max_ms=1000 * max(lat, default=0.0))
    await asyncio.gather(*(ch.close() for ch in channels))


async def churn(args: argparse.Namespace) -> None:
    """`rate` puts/s under `prefix`, cycling over 1,000 keys; each value starts with its send
    time."""
    grpc, pb, pbg = stubs()
    channel = grpc.aio.insecure_channel(args.target.split(",")[0])
    kv = pbg.KVStub(channel)
    window = Window()
    say(ready=True)
    await window.receive()
    start, k, done, failed = time.monotonic(), 0, 0, 0
    pending: set[asyncio.Future[Any]] = set()
    while True:
        due = start + k / args.rate
        if due >= window.end + 0.5:
            break
        await wait_until(due)
        stamp = f"{time.monotonic():<20.6f}".encode() + b"x" * VALUE_PAD
        fut = asyncio.ensure_future(kv.Put(pb.PutRequest(key=f"{args.prefix}{k % 1000}".encode(),
                                                         value=stamp), timeout=10))
        pending.add(fut)
        fut.add_done_callback(pending.discard)
        k += 1
        done += 1
    results = await asyncio.gather(*pending, return_exceptions=True)
    failed = sum(isinstance(r, BaseException) for r in results)
    say(puts=done, failed=failed)
    await channel.close()


async def fill(args: argparse.Namespace) -> None:
    """`count` service-record-sized keys under `prefix`, 128 puts per transaction."""
    grpc, pb, pbg = stubs()
    channel = grpc.aio.insecure_channel(args.target)
    kv = pbg.KVStub(channel)
    value = b'{"APP":"app1","ENV":"dev","EXT_PORT":32768,"HOST":"docker-0001","ID":"0ce60d000eac",' \
        b'"IP":"10.0.0.5","PORT":80,"SCOPE":"internal","SERVICE":"web","TYPE":"HTTP"}'
    sem = asyncio.Semaphore(8)

    async def batch(first: int) -> None:
        ops = [pb.RequestOp(request_put=pb.PutRequest(
            key=f"{args.prefix}app{i % 500}/dev/web/{i:012x}".encode(), value=value))
            for i in range(first, min(args.count, first + 128))]
        async with sem:
            await kv.Txn(pb.TxnRequest(success=ops), timeout=30)

    await asyncio.gather(*(batch(i) for i in range(0, args.count, 128)))
    say(ready=True, keys=args.count, value_bytes=len(value))
    await channel.close()


WORKERS = {"grpc-leases": grpc_leases, "gateway-leases": gateway_leases, "watch": watchers,
           "churn": churn, "fill": fill}


def worker_main(argv: list[str]) -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--worker", choices=sorted(WORKERS), required=True)
    p.add_argument("--target", required=True)
    p.add_argument("--count", type=int, default=0)
    p.add_argument("--rate", type=float, default=0)
    p.add_argument("--prefix", default="/services/bench/")
    args = p.parse_args(argv)
    asyncio.run(WORKERS[args.worker](args))


# --- the orchestrator --------------------------------------------------------------------
@dataclass
class Worker:
    kind: str
    proc: subprocess.Popen[str]

    @classmethod
    def start(cls, kind: str, target: str, **opts: Any) -> Worker:
        cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", kind, "--target", target]
        for k, v in opts.items():
            cmd += [f"--{k}", str(v)]
        return cls(kind, subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                          text=True))

    def read(self, timeout: float = 120) -> dict[str, Any]:
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        line = self.proc.stdout.readline() if ready else ""
        if not line:
            raise RuntimeError(f"worker {self.kind} said nothing (exit {self.proc.poll()})")
        got: dict[str, Any] = json.loads(line)
        return got

    def tell(self, start: float, end: float) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"from": start, "to": end}) + "\n")
        self.proc.stdin.flush()

    def finish(self, timeout: float = 90) -> dict[str, Any]:
        got = self.read(timeout)
        self.proc.wait(timeout)
        return got

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)


@dataclass
class Cell:
    group: str
    label: str
    leases: int = 0
    way: str = ""  # gateway, grpc, proxy (gRPC through the grpc-proxy), proxies (one per host)
    proxies: int = 1
    tier: bool = False  # the proxies forward to one shared grpc-proxy, not to etcd
    watchers: int = 0
    rate: float = 0
    via_proxy: bool = False  # watchers and churn through the proxy
    results: dict[str, Any] = field(default_factory=dict)


def measure(cell: Cell, etcd: EtcdServer, proxies: list[GrpcProxy], workers: list[Worker],
            start: float, window: float) -> None:
    """CPU in SAMPLE-second samples over [start, start + window]; counters from /metrics."""
    assert etcd.proc is not None
    etcd_pid = etcd.proc.pid
    samples: dict[str, list[float]] = {"etcd": [], "load": [], "proxy": []}

    def cpus() -> dict[str, float]:
        got = {"etcd": cpu_seconds(etcd_pid),
               "load": sum(cpu_seconds(w.proc.pid) for w in workers if w.proc.poll() is None)}
        if proxies:
            got["proxy"] = sum(cpu_seconds(p.pid) for p in proxies)
        return got

    time.sleep(max(0.0, start - time.monotonic()))
    before = scrape(etcd.endpoint)
    last, t = cpus(), time.monotonic()
    for _ in range(max(1, int(window / SAMPLE))):
        time.sleep(max(0.0, t + SAMPLE - time.monotonic()))
        now_cpu, now = cpus(), time.monotonic()
        for k, v in now_cpu.items():
            samples[k].append(100 * (v - last[k]) / (now - t))
        last, t = now_cpu, now
    after = scrape(etcd.endpoint)
    span = window
    rates = {k: (after.get(k, 0) - before.get(k, 0)) / span for k in after
             if not k.endswith(("watcher_total", "watch_stream_total"))}
    cell.results.update(
        etcd_cpu=samples["etcd"], load_cpu=samples["load"], proxy_cpu=samples["proxy"],
        etcd_rss=rss_mb(etcd_pid), proxy_rss=sum(rss_mb(p.pid) for p in proxies),
        rates=rates, watchers_seen=after.get("mvcc_watcher_total", 0),
        streams_seen=after.get("mvcc_watch_stream_total", 0), loadavg=os.getloadavg()[0])


class Stack:
    """One etcd, maybe a grpc-proxy in front, maybe background lease holders."""

    def __init__(self, work: Path, proxies: int, background_leases: int,
                 tier: bool = False) -> None:
        self.etcd = EtcdServer(work / f"etcd-{time.monotonic_ns()}").start()
        self.tier = [GrpcProxy(work, self.direct).start()] if tier else []
        upstream = self.tier[0].target if tier else self.direct
        self.proxies = [GrpcProxy(work, upstream).start() for _ in range(proxies)]
        self.proxy = self.proxies[0] if self.proxies else None
        self.background: list[Worker] = []
        if background_leases:
            w = Worker.start("grpc-leases", self.direct, count=background_leases)
            w.read(180)
            w.tell(1e12, 1e12 + 1)  # never measured; killed with the stack
            self.background.append(w)
            time.sleep(PERIOD)

    @property
    def direct(self) -> str:
        return self.etcd.endpoint.removeprefix("http://")

    def target(self, via_proxy: bool) -> str:
        return ",".join(p.target for p in self.proxies) if via_proxy and self.proxies \
            else self.direct

    def stop(self) -> None:
        for w in self.background:
            w.kill()
        for proxy in [*self.proxies, *self.tier]:
            proxy.stop()
        self.etcd.stop()


def run_cell(cell: Cell, stack: Stack, window: float) -> None:
    workers: list[Worker] = []
    try:
        if cell.group == "leases":
            kind = "gateway-leases" if cell.way == "gateway" else "grpc-leases"
            workers.append(Worker.start(kind, stack.target(cell.way in ("proxy", "proxies")),
                                        count=cell.leases))
        else:
            target = stack.target(cell.via_proxy)
            workers += [Worker.start("watch", target, count=share)
                        for share in split(cell.watchers, 500)]
            if cell.rate:
                workers.append(Worker.start("churn", target, rate=cell.rate))
        for w in workers:
            w.read(180)  # leases granted, watches created, writer connected
        start = time.monotonic() + PERIOD  # one refresh period of warm-up
        for w in workers:
            w.tell(start, start + window)
        measure(cell, stack.etcd, [*stack.proxies, *stack.tier], [*workers, *stack.background],
                start, window)
        for w in workers:
            cell.results.setdefault("workers", []).append({"kind": w.kind, **w.finish()})
    finally:
        for w in workers:
            w.kill()


def split(total: int, size: int) -> list[int]:
    return [min(size, total - i) for i in range(0, total, size)]


def run_cells(cells: list[Cell], window: float, work: Path) -> None:
    """A fresh etcd for every lease cell (lapsing leases would disturb the next one); the
    cells of a watch group share one, with its background leases."""
    stack: Stack | None = None
    previous = ""
    try:
        for cell in cells:
            if stack is None or cell.group == "leases" or cell.group != previous:
                if stack is not None:
                    stack.stop()
                    stack = None
                same = [c for c in cells if c.group == cell.group]
                if cell.group == "leases":
                    proxies = cell.proxies if cell.way in ("proxy", "proxies") else 0
                else:
                    proxies = max((c.proxies for c in same if c.via_proxy), default=0)
                stack = Stack(work, proxies, cell.leases if cell.group != "leases" else 0,
                              tier=cell.tier)
            previous = cell.group
            run_cell(cell, stack, window)
            print(summary_line(cell), flush=True)
    finally:
        if stack is not None:
            stack.stop()


def prefix_end(prefix: bytes) -> bytes:
    return prefix[:-1] + bytes([prefix[-1] + 1])


def read_whole(kv: Any, pb: Any, prefix: bytes) -> int:
    """One Range of the whole prefix, no limit."""
    return len(kv.Range(pb.RangeRequest(key=prefix, range_end=prefix_end(prefix)),
                        timeout=120).kvs)


def read_sorted_pages(kv: Any, pb: Any, prefix: bytes, page: int = 1000) -> int:
    """buoy's pages as they were: each with a limit and sorted by key (ascending)."""
    start, end, rev, got = prefix, prefix_end(prefix), 0, 0
    while True:
        reply = kv.Range(pb.RangeRequest(key=start, range_end=end, limit=page, revision=rev,
                                         sort_order=pb.RangeRequest.ASCEND,
                                         sort_target=pb.RangeRequest.KEY), timeout=120)
        rev = rev or reply.header.revision
        got += len(reply.kvs)
        if not reply.more or not reply.kvs:
            return got
        start = reply.kvs[-1].key + b"\0"


def read_bounded(kv: Any, pb: Any, prefix: bytes, page: int = 1000) -> int:
    """The keys alone in one Range, then the values in ranges bounded by those keys: on
    etcd 3.4 a Range with a limit walks the index to the end of its range, one bounded by
    the next page's first key walks that page only."""
    end = prefix_end(prefix)
    keys = [m.key for m in kv.Range(pb.RangeRequest(key=prefix, range_end=end, keys_only=True),
                                    timeout=120).kvs]
    rev = 0
    got = 0
    for i in range(0, len(keys), page):
        upper = keys[i + page] if i + page < len(keys) else end
        reply = kv.Range(pb.RangeRequest(key=keys[i], range_end=upper, revision=rev), timeout=60)
        rev = rev or reply.header.revision  # every page at the first page's revision
        got += len(reply.kvs)
    return got


def measure_reads(work: Path, records: int, rounds: int = 2) -> dict[str, Any]:
    """etcd's CPU for one read of a prefix holding `records` service records: what
    register's reconcile does for /services (and /skydns) at start and every --resync.
    buoy's paged read (EtcdStore.get_prefix), against one unpaged Range and against
    pages bounded by a keys-only read."""
    from buoy.etcd.settings import EtcdSettings
    from buoy.etcd.store import EtcdStore

    grpc, pb, pbg = stubs()
    stack = Stack(work, 0, 0)
    try:
        Worker.start("fill", stack.direct, count=records, prefix="/services/internal/") \
            .finish(300)
        assert stack.etcd.proc is not None
        pid = stack.etcd.proc.pid
        store = EtcdStore(EtcdSettings.from_strings(stack.etcd.endpoint, timeout=120))
        channel = grpc.insecure_channel(stack.direct,
                                        options=[("grpc.max_receive_message_length", 1 << 30)])
        kv = pbg.KVStub(channel)
        ways = {"sorted": lambda: read_sorted_pages(kv, pb, b"/services/"),
                "paged": lambda: len(store.get_prefix("/services/")[1]),
                "whole": lambda: read_whole(kv, pb, b"/services/"),
                "bounded": lambda: read_bounded(kv, pb, b"/services/")}
        out: dict[str, Any] = {"records": records, "etcd_rss": 0.0}
        for _ in range(rounds):
            for way, read in ways.items():
                before, t = cpu_seconds(pid), time.monotonic()
                got = read()
                out.setdefault(way, {"cpu": [], "wall": []})
                out[way]["wall"].append(time.monotonic() - t)
                out[way]["cpu"].append(cpu_seconds(pid) - before)
                if got != records:
                    raise RuntimeError(f"{way} read {got} of {records} records")
        _, kvs = store.get_prefix("/services/internal/app0/")
        out["bytes_per_record"] = sum(len(x.key) + len(x.value) for x in kvs) / max(1, len(kvs))
        out["etcd_rss"] = rss_mb(pid)
        store.close()
        channel.close()
        return out
    finally:
        stack.stop()


def plan(quick: bool) -> list[Cell]:
    counts = [1000] if quick else [1000, 5000]
    cells = [Cell("leases", f"{n} leases, {WAYS[way]}", leases=n, way=way)
             for n in counts for way in WAYS]
    if not quick:  # the realistic case: a grpc-proxy on each host, 50 containers per host
        cells.append(Cell("leases", "5000 leases, gRPC through 100 grpc-proxies (50 each)",
                          leases=5000, way="proxies", proxies=100))
        cells.append(Cell("leases", "5000 leases, gRPC through 100 grpc-proxies → one shared "
                          "grpc-proxy", leases=5000, way="proxies", proxies=100, tier=True))
    grid = [(0, 10), (0, 100), (100, 10), (100, 100), (1000, 10)]
    proxied = [(100, 100), (1000, 10)]
    if quick:
        grid, proxied = [(0, 10), (10, 10), (100, 100)], [(100, 100)]
    cells += [Cell("watch", f"{w} watchers, {r:g} puts/s", leases=1000, watchers=w, rate=r)
              for w, r in grid]
    cells += [Cell("watch", f"{w} watchers, {r:g} puts/s, through one grpc-proxy", leases=1000,
                   watchers=w, rate=r, via_proxy=True) for w, r in proxied]
    # hosts' proxies in front of one shared proxy: 10 watchers (one host's register) per
    # host proxy, the shared one coalescing the same range across hosts
    cells.append(Cell("tier", "100 watchers, 100 puts/s, through 10 host proxies → one "
                      "shared grpc-proxy", leases=1000, watchers=100, rate=100, via_proxy=True,
                      proxies=10, tier=True))
    if not quick:
        cells.append(Cell("combined", "5000 leases (gRPC) + 100 watchers + 100 puts/s",
                          leases=5000, watchers=100, rate=100))
    return cells


WAYS = {"gateway": "JSON gateway", "grpc": "gRPC stream each", "proxy": "gRPC through grpc-proxy"}


def summary_line(cell: Cell) -> str:
    r = cell.results
    rates = {k: round(v, 1) for k, v in r["rates"].items() if v and ":" not in k}
    return (f"{cell.label}: etcd {cpu_cell(r['etcd_cpu'])}, load {cpu_cell(r['load_cpu'])}, "
            f"proxy {cpu_cell(r['proxy_cpu'])}, etcd rss {r['etcd_rss']:.0f} MB, rates {rates}, "
            f"watchers seen {r['watchers_seen']:.0f}, workers {r.get('workers')}")


def main() -> None:
    if "--worker" in sys.argv:
        worker_main(sys.argv[1:])
        return
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop etcd and the workers too
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--window", type=float, default=20.0, help="seconds measured per cell")
    parser.add_argument("--quick", action="store_true", help="fewer cells (a check, no doc)")
    parser.add_argument("--json", type=Path, help="also write every figure here")
    parser.add_argument("--only", help="run only the cells whose label holds this (no doc); "
                        "'read' for the prefix read alone")
    parser.add_argument("--records", type=int, default=100000,
                        help="service records under the prefix read")
    args = parser.parse_args()
    cells = [c for c in plan(args.quick) if not args.only or args.only in c.label]
    load_before = os.getloadavg()
    began = time.monotonic()
    reads: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="buoy-bench-etcd-scale-") as work:
        run_cells(cells, args.window, Path(work))
        if not args.only or "read" in args.only:
            reads = measure_reads(Path(work), 20000 if args.quick else args.records)
            print(f"reads: {reads}", flush=True)
    took = time.monotonic() - began
    if args.json:
        args.json.write_text(json.dumps({"cells": [{"label": c.label, **c.results} for c in cells],
                                         "reads": reads}, indent=1))
    text = body(cells, args.window, load_before, took, reads)
    if args.quick or args.only:
        print(text)  # a check: the doc keeps the full run's figures
    else:
        from report import write_section
        write_section("etcd at scale", text)


LEASE_HEAD = ("| cell | keep-alives/s etcd saw | gRPC calls started/s | etcd CPU "
              "| etcd CPU per keep-alive | etcd RSS | proxy CPU (all) | load CPU "
              "| answer p50 / p99 / max | failed |\n|---|---|---|---|---|---|---|---|---|---|")
WATCH_HEAD = ("| cell | watchers etcd holds | puts/s | events sent/s | etcd CPU "
              "| etcd CPU per event delivered | etcd RSS | proxy CPU | load CPU "
              "| fan-out p50 / p99 / max |\n|---|---|---|---|---|---|---|---|---|---|")


def med(values: Sequence[float]) -> float:
    return statistics.median(values) if values else 0.0


def cpu_cell(values: Sequence[float]) -> str:
    if not values:
        return "-"
    return f"{med(values):.1f} % ({min(values):.1f}–{max(values):.1f})"


def worker(cell: Cell, kind: str) -> dict[str, Any]:
    return next((w for w in cell.results.get("workers", []) if w["kind"].endswith(kind)), {})


def lease_rows(cells: list[Cell]) -> str:
    rows = []
    for c in cells:
        r, w = c.results, worker(c, "leases")
        ka = r["rates"].get("lease_renewed_total", 0)
        per = 1e4 * med(r["etcd_cpu"]) / ka if ka else 0
        rows.append(
            f"| {c.label} | {ka:.0f} | {r['rates'].get('calls', 0):.0f} | {cpu_cell(r['etcd_cpu'])} "
            f"| {per:.0f} µs | {r['etcd_rss']:.0f} MB | {cpu_cell(r['proxy_cpu'])} "
            f"| {cpu_cell(r['load_cpu'])} | {w.get('latency_p50_ms', 0):.1f} / "
            f"{w.get('latency_p99_ms', 0):.0f} / {w.get('latency_max_ms', 0):.0f} ms "
            f"| {w.get('failed', 0)} of {w.get('refreshes', 0)} |")
    return "\n".join(rows)


def watch_rows(cells: list[Cell], baseline: dict[float, float]) -> str:
    rows = []
    for c in cells:
        r, w = c.results, worker(c, "watch")
        events = r["rates"].get("mvcc_events_total", 0)
        extra = med(r["etcd_cpu"]) - baseline.get(c.rate, 0.0)
        per = f"{1e4 * extra / events:.0f} µs" \
            if events >= 1000 and c.watchers and not c.via_proxy else "-"
        lat = (f"{w['latency_p50_ms']:.1f} / {w['latency_p99_ms']:.0f} / "
               f"{w['latency_max_ms']:.0f} ms" if w else "-")
        rows.append(
            f"| {c.label} | {r['watchers_seen']:.0f} | {r['rates'].get('mvcc_put_total', 0):.0f} "
            f"| {events:.0f} | {cpu_cell(r['etcd_cpu'])} | {per} | {r['etcd_rss']:.0f} MB "
            f"| {cpu_cell(r['proxy_cpu']) if c.via_proxy else '-'} | {cpu_cell(r['load_cpu'])} "
            f"| {lat} |")
    return "\n".join(rows)


def reads_text(reads: dict[str, Any]) -> str:
    if not reads:
        return ""
    n = reads["records"]
    labels = {"sorted": "pages of 1,000 with a limit, sorted by key (what buoy's paged read "
                        "asked before)",
              "paged": "buoy's paged read (`EtcdStore.get_prefix`: pages of up to 1,000 keys "
                       "with a limit, no sort order)",
              "whole": "one Range of the whole prefix, no limit",
              "bounded": "the keys alone, then pages of 1,000 bounded by the next page's "
                         "first key"}
    rows = "\n".join(
        f"| {labels[w]} | {med(reads[w]['cpu']):.2f} s ({min(reads[w]['cpu']):.2f}–"
        f"{max(reads[w]['cpu']):.2f}) | {1e6 * med(reads[w]['cpu']) / n:.1f} µs "
        f"| {med(reads[w]['wall']):.2f} s |" for w in labels)
    return f"""
**A whole-prefix read.** register's reconcile reads all of `/services` and `/skydns`
at start and every `--resync` (30 s); every watcher reads its prefix at start and after a
compaction. A prefix holding {n:,} service records (about {reads['bytes_per_record']:.0f}
bytes of key and value each), each way {len(reads['paged']['cpu'])} times, alternating
(median, min–max):

| read | etcd CPU per read | per record | wall time |
|---|---|---|---|
{rows}

On etcd 3.4 a Range with any sort order set ignores its limit: etcd reads every key and
value to the end of the range, sorts them and truncates, so sorted pages that each run to
the end of the prefix cost etcd the square of the prefix's size. Without a sort order a
limited Range still walks the index to the end of its range (a smaller square); pages
bounded by the next page's first key walk only themselves.
"""


def body(cells: list[Cell], window: float, load_before: tuple[float, float, float],
         took: float, reads: dict[str, Any]) -> str:
    leases = [c for c in cells if c.group == "leases"]
    watch = [c for c in cells if c.group != "leases"]
    # the etcd CPU of the same stack with the same churn and no watcher: what watchers add
    baseline = {c.rate: med(c.results["etcd_cpu"]) for c in watch
                if c.watchers == 0 and not c.via_proxy}
    loads = [c.results["loadavg"] for c in cells]
    return f"""## etcd at scale

What etcd pays for buoy's load; the design for 10,000 hosts × 50 containers built on these
figures is [scale.md](scale.md). A private etcd 3.4 (one member) on loopback; the load
comes from worker processes of the benchmark (asyncio, grpc.aio), whose CPU is the *load*
column: it shared the 2 cores with etcd. Every cell warms up for one refresh period (5 s),
then measures {window:g} s in 5 s samples: CPU is the median of the samples (min–max in
brackets), in % of one core, from /proc/<pid>/stat; the counts are etcd's own /metrics
over the window. Leases have TTL 15 s and are refreshed every 5 s, spread evenly.

**Lease keep-alives.** *JSON gateway*: announce's way, a POST to /v3/lease/keepalive on
a kept-open HTTP/1.1 connection per holder. *gRPC stream each*: a connection and a
LeaseKeepAlive stream per holder (register, listen). *Through grpc-proxy*: the same
clients against `etcd grpc-proxy start` in front of etcd; *100 grpc-proxies*: 50 holders
on each, one proxy per host as [scale.md](scale.md) proposes. The answer time is the
client's keep-alive request → its answer.

{LEASE_HEAD}
{lease_rows(leases)}

**Watchers and churn.** 1,000 leases held over gRPC all along (as above); N watchers of
one prefix, each its own stream (500 per worker process, 10 per connection), every one
receiving every put (as every register's /announce watch does); the churn puts values of
about 180 bytes over 1,000 keys under that prefix. *Events sent/s* is
etcd_debugging_mvcc_events_total (one per event per watcher). *Per event delivered*: the
etcd CPU above the same stack's 0-watcher cell with the same puts/s, divided by the
events sent (direct cells with at least 1,000 events/s).
Fan-out latency: the put sent → each watcher's process got the event (p50 / p99 / max over
every event of every watcher); at 10,000 events/s the watchers' own Python process is near
a core, so its tail is in part theirs.

{WATCH_HEAD}
{watch_rows(watch, baseline)}

{reads_text(reads)}
etcd holds 2 watchers of its own per grpc-proxy (the proxy's leader watch), counted in
*watchers etcd holds*. The machine's load average (1 min) was {load_before[0]:.2f} before
the run and {min(loads, default=0):.2f}–{max(loads, default=0):.2f} during the cells (2 cores, shared with
other people's work). The run took {took / 60:.1f} min.
"""


if __name__ == "__main__":
    main()
