"""Benchmark `buoy dns`: dnsperf throughput and latency, and change → answer delay.

Starts its own etcd and one `buoy dns` process on free loopback ports, loads
SkyDNS records for 20 services x 3 instances, then:
1. throughput: dnsperf at rising fixed rates (10 s each); the highest rate that
   completes with 0 lost queries; the headline rate (40,000 q/s) three more times;
   three unthrottled runs (median and spread);
2. latency: dnsperf -Q 5000 for 10 s, per-query latencies (-v) → p50 / p99;
3. change → visible: rewrite one record 200 times, each time polling the server
   until the new address is answered; p50 / p99 of put-start → first new answer;
4. the query counters' cost on the hot path: a cached answer's respond() in this
   process, against the counter increment alone.

Run: python bench/dns.py  (writes its section of docs/benchmarks.md)
"""

from __future__ import annotations

import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# This file is named dns.py: keep its folder from shadowing dnspython's `dns` package.
HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]

import dns.message  # noqa: E402
import dns.query  # noqa: E402

sys.path.insert(0, str(HERE.parent / "tests"))
sys.path.append(str(HERE))  # after site-packages, for `report` only

from etcd_server import EtcdServer, free_port, wait_for  # noqa: E402
from report import percentile, summary, write_section  # noqa: E402

from buoy.etcd.dns_records import SkyDNSRecord  # noqa: E402
from buoy.etcd.keys import KeyLayout  # noqa: E402
from buoy.etcd.settings import EtcdSettings  # noqa: E402
from buoy.etcd.store import EtcdStore  # noqa: E402

PREFIX = "/bench"
ZONE = "buoy.internal."
RATES = (20000, 40000, 60000, 80000, 100000)
HEADLINE = 40000  # the rate that must hold with 0 lost, run three more times
RUN_SECONDS = 10


def load_records(store: EtcdStore, keys: KeyLayout) -> list[str]:
    """20 services x 3 instances; returns the dnsperf query lines."""
    lines = []
    for s in range(20):
        service = f"svc{s}.dev.app1.internal.{ZONE}"
        for i in range(3):
            name = f"i{i}.{service}"
            store.put(keys.skydns_key(name),
                      SkyDNSRecord(host=f"10.0.{s}.{i + 1}", port=30000 + i, ttl=15).to_json())
            lines.append(f"{name} A")
        lines += [f"{service} A", f"{service} SRV"]
    lines += ["missing.buoy.internal. A", "outside.example. A"]
    return lines


def dnsperf(port: int, datafile: Path, *, qps: int | None, verbose: bool = False) -> str:
    # -b 4096: 4 MB socket buffers for dnsperf itself. With the default (~208 KB) the
    # client drops responses on its own socket whenever other load deschedules it (seen
    # as RcvbufErrors while the server's socket drops nothing), which is not the server.
    cmd = ["dnsperf", "-s", "127.0.0.1", "-p", str(port), "-d", str(datafile),
           "-l", str(RUN_SECONDS), "-t", "2", "-q", "200", "-b", "4096"]
    if qps:
        cmd += ["-Q", str(qps)]
    if verbose:
        cmd.append("-v")
    return subprocess.run(cmd, capture_output=True, text=True, timeout=RUN_SECONDS + 15).stdout


def server_drops(port: int) -> int:
    """Datagrams the kernel dropped on the server's UDP socket so far (/proc/net/udp)."""
    suffix = f":{port:04X}"
    for line in Path("/proc/net/udp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1].endswith(suffix):
            return int(fields[-1])
    return 0


def stat(out: str, label: str) -> float:
    match = re.search(rf"{label}:\s+([0-9.]+)", out)
    return float(match.group(1)) if match else float("nan")


def change_delay(store: EtcdStore, keys: KeyLayout, port: int, rounds: int = 200) -> list[float]:
    name = f"moving.{ZONE}"
    key = keys.skydns_key(name)
    delays = []
    for n in range(rounds):
        ip = f"10.200.{n // 250}.{n % 250 + 1}"
        start = time.perf_counter()
        store.put(key, SkyDNSRecord(host=ip, ttl=15).to_json())
        while True:
            reply = dns.query.udp(dns.message.make_query(name, "A"), "127.0.0.1", port=port,
                                  timeout=2)
            if any(rd.to_text() == ip for rrset in reply.answer for rd in rrset):
                break
            if time.perf_counter() - start > 5:
                raise RuntimeError(f"change to {ip} not seen within 5 s")
        delays.append((time.perf_counter() - start) * 1000)
    return delays


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        etcd = EtcdServer(Path(tmp) / "etcd").start()
        store = EtcdStore(EtcdSettings.from_strings(etcd.endpoint))
        keys = KeyLayout(PREFIX)
        datafile = Path(tmp) / "queries.txt"
        datafile.write_text("\n".join(load_records(store, keys)) + "\n")
        port = free_port()
        proc = subprocess.Popen(
            [sys.executable, "-c", "from buoy.cli import main; main()", "dns", "--listen",
             f"127.0.0.1:{port}", "--prefix", PREFIX, "--etcd-endpoints", etcd.endpoint,
             "--log-level", "warning"])
        try:
            wait_for(lambda: _answers(port), timeout=20, what="buoy dns answering")
            body = run_all(store, keys, port, datafile)
        finally:
            proc.terminate()
            proc.wait(timeout=15)
            store.close()
            etcd.stop()
    print(body)
    write_section("dns", body)


def load_average() -> str:
    """The 1-minute load average: the machine is shared, so say how busy it was."""
    return Path("/proc/loadavg").read_text().split()[0]


def run_all(store: EtcdStore, keys: KeyLayout, port: int, datafile: Path) -> str:
    load_start = load_average()
    rows = []
    best = 0.0  # the highest rate any run achieved with 0 queries lost
    headline: list[float] = []  # queries lost in each run at HEADLINE
    unthrottled: list[float] = []
    for rate in (*RATES, HEADLINE, HEADLINE, HEADLINE, None, None, None):
        dropped = server_drops(port)
        out = dnsperf(port, datafile, qps=rate)
        dropped = server_drops(port) - dropped
        lost, qps = stat(out, "Queries lost"), stat(out, "Queries per second")
        rows.append(f"| {rate or 'unthrottled'} | {qps:.0f} | {lost:.0f} | {dropped} |")
        if lost == 0 and rate is not None:
            best = max(best, qps)
        if rate == HEADLINE:
            headline.append(lost)
        if rate is None:
            unthrottled.append(qps)
        print(rows[-1], flush=True)
    verbose = dnsperf(port, datafile, qps=5000, verbose=True)
    latencies = [float(m.group(1)) * 1000 for m in
                 re.finditer(r"^> \w+ \S+ \S+ ([0-9.]+)$", verbose, re.M)]
    delays = change_delay(store, keys, port)
    load_end = load_average()
    hit_ns, count_ns = counter_cost(datafile)
    return "\n".join([
        "### `buoy dns` (bench/dns.py)",
        "",
        f"One `buoy dns` process on loopback; 60 instance records in 20 services; query mix "
        f"A (instances and services), SRV, NXDOMAIN and REFUSED; dnsperf {RUN_SECONDS} s runs "
        f"(`-q 200 -t 2 -b 4096`). *Server drops*: datagrams the kernel dropped on the "
        f"server's socket during the run (`/proc/net/udp`). The machine's 1-minute load "
        f"average (2 cores, shared): {load_start} at the start, {load_end} at the end.",
        "",
        "| target q/s | achieved q/s | lost | server drops |", "|---|---|---|---|", *rows,
        "",
        f"- **Highest rate achieved with 0 lost** (any fixed target): {best:.0f} queries/s "
        f"(target ≥ 40,000)",
        f"- **Lost at {HEADLINE} q/s, {len(headline)} runs:** "
        + ", ".join(f"{n:.0f}" for n in headline),
        f"- **Unthrottled:** median {statistics.median(unthrottled):.0f} q/s, min "
        f"{min(unthrottled):.0f}, max {max(unthrottled):.0f} (n={len(unthrottled)})",
        f"- **Latency at a steady 5,000 q/s:** p50 {percentile(latencies, 0.5):.3f} ms, "
        f"p99 {percentile(latencies, 0.99):.3f} ms (n={len(latencies)}, lost "
        f"{stat(verbose, 'Queries lost'):.0f})" if latencies else
        "- **Latency at 5,000 q/s:** no per-query samples parsed",
        f"- **Record change → visible in answers:** {summary(delays)}; p99 target < 100 ms",
        f"- **Query counters on the hot path:** a cached answer costs {hit_ns:.0f} ns in "
        f"`Responder.respond`, of which the counter increment is {count_ns:.0f} ns "
        f"({100 * count_ns / hit_ns:.0f} %); at the median unthrottled rate a whole query "
        f"takes {1e9 / statistics.median(unthrottled):.0f} ns of the server, so the "
        f"counters cost {100 * count_ns * statistics.median(unthrottled) / 1e9:.1f} % of it",
    ])


def counter_cost(datafile: Path, rounds: int = 200) -> tuple[float, float]:
    """ns per cached respond() over the query mix, and ns per counter increment alone."""
    import timeit

    from buoy.skydns.index import Index
    from buoy.skydns.responder import Responder

    responder = Responder((ZONE,), lambda lease: None)
    responder.publish(Index())  # the answers' content does not matter here, only the path
    queries = []
    for n, line in enumerate(datafile.read_text().split("\n")):
        if line:
            name, qtype = line.split()
            query = dns.message.make_query(name, qtype)
            query.id = n
            queries.append(query.to_wire())
    for wire in queries:
        responder.respond(wire, True)
    respond = responder.respond
    hit = min(timeit.repeat(lambda: [respond(w, True) for w in queries], number=rounds,
                            repeat=5)) / (rounds * len(queries))
    # The increment exactly as respond() does it, timed as a statement (no call overhead).
    names = {"counts": {}, "label": ("A", "NOERROR")}
    increment = min(timeit.repeat("counts[label] = counts.get(label, 0) + 1", globals=names,
                                  number=rounds * len(queries), repeat=5)) / (
        rounds * len(queries))
    return hit * 1e9, increment * 1e9


def _answers(port: int) -> bool:
    try:
        reply = dns.query.udp(dns.message.make_query(f"i0.svc0.dev.app1.internal.{ZONE}", "A"),
                              "127.0.0.1", port=port, timeout=0.5)
    except Exception:
        return False
    return bool(reply.answer)


if __name__ == "__main__":
    main()
