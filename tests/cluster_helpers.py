"""Fault-injection helpers: a 3-node etcd cluster, a request loop, and a whole agent stack.

Shared by the reliability tests and `bench/faults.py` (no tests here). Every process
gets free ports and its own log file, and is stopped by its own PID.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent_process import AgentProcess
from docker_helpers import RegisterProcess, run_httpd
from etcd_server import EtcdServer, free_port, wait_for
from listen_helpers import get

from buoy.etcd.keys import KeyLayout
from buoy.etcd.records import AnnouncePath
from buoy.etcd.settings import EtcdSettings
from buoy.etcd.store import EtcdStore

WEB = AnnouncePath.parse("/internal/app1/dev/web")
VHOST = "web.dev.app1"
LISTEN_PATH = "/services/internal/app1/dev"


class ClusterMember(EtcdServer):
    """One member of a static cluster: `--initial-cluster` names every member."""

    initial_cluster = ""
    token = ""

    def args(self) -> list[str]:
        args = super().args()
        args[args.index("--initial-cluster") + 1] = self.initial_cluster
        return [*args, "--initial-cluster-token", self.token, "--initial-cluster-state", "new"]


class EtcdCluster:
    """Three (or `size`) etcd members on loopback, each with free client and peer ports."""

    def __init__(self, base: Path, size: int = 3) -> None:
        self.members = [ClusterMember(base / f"m{i}", name=f"m{i}") for i in range(size)]
        initial = ",".join(f"{m.name}={m.peer_url}" for m in self.members)
        token = f"buoy-{uuid.uuid4().hex[:8]}"
        for m in self.members:
            m.initial_cluster, m.token = initial, token

    @property
    def endpoints(self) -> str:
        return ",".join(m.endpoint for m in self.members)

    def start(self) -> EtcdCluster:
        for m in self.members:  # all at once: each waits for a quorum to report healthy
            m.start(wait=False)
        for m in self.members:
            m.wait_ready(30)
        return self

    def alive(self) -> list[ClusterMember]:
        return [m for m in self.members if m.proc is not None and m.proc.poll() is None]

    def leader(self, timeout: float = 15.0) -> ClusterMember:
        """The member that reports itself leader (etcdctl endpoint status), once there is one."""
        def find() -> ClusterMember | None:
            live = self.alive()
            proc = subprocess.run(
                ["etcdctl", "--endpoints", ",".join(m.endpoint for m in live),
                 "--command-timeout=2s", "endpoint", "status", "-w", "json"],
                capture_output=True, text=True, env={**os.environ, "ETCDCTL_API": "3"},
                timeout=10)
            try:
                rows = json.loads(proc.stdout or "[]")
            except json.JSONDecodeError:
                return None
            for row in rows:
                status = row.get("Status", {})
                if status.get("leader") and status["header"]["member_id"] == status["leader"]:
                    return next(m for m in live if m.endpoint == row["Endpoint"])
            return None

        found: ClusterMember = wait_for(find, timeout, interval=0.2, what="an etcd leader")
        return found

    def stop(self) -> None:
        for m in self.members:
            m.stop()


class RequestLoop:
    """GETs `host` through HAProxy on its own thread, one new connection each; counts failures."""

    def __init__(self, port: int, host: str = VHOST, pause: float = 0.01) -> None:
        self.port, self.host, self.pause = port, host, pause
        self.sent = self.failed = 0
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="request-loop", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            status, body = get(self.port, self.host)
            self.sent += 1
            if status != 200:
                self.failed += 1
                if len(self.errors) < 20:
                    self.errors.append(f"{status} {body[:80]}")
            self._stop.wait(self.pause)

    def __enter__(self) -> RequestLoop:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)


class Stack:
    """register + listen (+ dns) as processes, busybox containers and one announcer each."""

    def __init__(self, work: Path, endpoints: str, prefix: str, docker: Any, *,
                 dns: bool = False, announce_ttl: int = 6, announce_interval: float = 2.0) -> None:
        self.work, self.endpoints, self.prefix, self.docker = work, endpoints, prefix, docker
        self.keys = KeyLayout(prefix)
        self.env = {"BUOY_ETCD_ENDPOINTS": endpoints, "BUOY_PREFIX": prefix,
                    "BUOY_ETCD_TIMEOUT": "2"}
        self.ttl, self.interval = announce_ttl, announce_interval
        self.http_port = free_port()
        self.dns_port = free_port() if dns else None
        self.containers: dict[str, Any] = {}
        self.announcers: dict[str, AgentProcess] = {}
        self.agents: dict[str, AgentProcess | RegisterProcess] = {}
        self._marks: dict[str, int] = {}

    def start(self) -> Stack:
        self.agents["register"] = RegisterProcess(
            self.work / "buoy.register.log", self.endpoints, self.prefix, "--host-id",
            f"host-{uuid.uuid4().hex[:6]}", "--host-ip", "127.0.0.1", "--ttl", "10").start()
        self.agents["listen"] = AgentProcess(
            ["listen", "--listen-path", LISTEN_PATH, "--http-bind", f"127.0.0.1:{self.http_port}",
             "--state-dir", str(self.work / "listen"), "--drain-timeout", "2"],
            env=self.env, log_dir=self.work).start()
        if self.dns_port is not None:
            self.agents["dns"] = AgentProcess(
                ["dns", "--listen", f"127.0.0.1:{self.dns_port}"], env=self.env,
                log_dir=self.work).start()
        return self

    def add_container(self, ident: str) -> None:
        self.containers[ident] = run_httpd(
            self.docker, hostname=ident, env={"ANNOUNCE_PATH": str(WEB), "PORT": "80"})

    def announce(self, ident: str) -> AgentProcess:
        """Start the announcer of container `ident` (it runs on the host, as supervisord would)."""
        proc = AgentProcess(
            ["announce", "--path", str(WEB), "--port", "80", "--type", "HTTP", "--id", ident,
             "--ttl", str(self.ttl), "--interval", str(self.interval)],
            env=self.env, log_dir=self.work).start()
        self.announcers[ident] = proc
        return proc

    def withdraw(self, ident: str) -> int:
        """SIGTERM the announcer; its exit code."""
        proc = self.announcers.pop(ident)
        proc.signal(signal.SIGTERM)
        return proc.wait(30)

    def live(self) -> set[str]:
        return set(self.announcers)

    def missing(self, store: EtcdStore) -> dict[str, set[str]]:
        """Live instances whose announce or service record is absent, or that do not route."""
        out: dict[str, set[str]] = {"announce": set(), "services": set(), "route": set()}
        for ident in self.live():
            if store.get(self.keys.announce_key(WEB, ident)) is None:
                out["announce"].add(ident)
            if store.get(self.keys.service_key(WEB, ident)) is None:
                out["services"].add(ident)
            if get(self.http_port, f"{ident}.{VHOST}")[0] != 200:
                out["route"].add(ident)
        return out

    def stale(self, store: EtcdStore) -> set[str]:
        """Service records of instances whose announcer was stopped."""
        _, kvs = store.get_prefix(self.keys.services_root)
        present = {kv.key.rsplit("/", 1)[1] for kv in kvs}
        return present - self.live()

    def exited(self) -> dict[str, int | None]:
        procs = {**self.agents, **{f"announce {i}": p for i, p in self.announcers.items()}}
        return {name: p.proc.poll() for name, p in procs.items()
                if p.proc is not None and p.proc.poll() is not None}

    def mark_logs(self) -> None:
        """Remember every log's line count (to count the lines written from now on)."""
        self._marks = self.log_lines()

    def log_lines(self) -> dict[str, int]:
        procs = {**self.agents, **{f"announce {i}": p for i, p in self.announcers.items()}}
        return {name: len(p.log().splitlines()) for name, p in procs.items()}

    def lines_since_mark(self) -> dict[str, int]:
        return {name: n - self._marks.get(name, 0) for name, n in self.log_lines().items()}

    def logs(self) -> str:
        procs = {**self.agents, **{f"announce {i}": p for i, p in self.announcers.items()}}
        return "\n".join(f"== {name}\n{p.log()[-3000:]}" for name, p in procs.items())

    def close(self) -> None:
        for proc in [*self.announcers.values(), *self.agents.values()]:
            if proc.proc is not None and proc.proc.poll() is None:
                proc.proc.send_signal(signal.SIGTERM)
        for proc in [*self.announcers.values(), *self.agents.values()]:
            if proc.proc is not None:
                try:
                    proc.proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.proc.kill()
                    proc.proc.wait(5)
        for c in self.containers.values():
            try:
                c.remove(force=True)
            except Exception:  # noqa: BLE001 - already gone
                pass


class Churner:
    """Toggles announcers on a thread: a stopped one is started, a running one withdrawn."""

    def __init__(self, stack: Stack, idents: list[str], period: float = 0.7) -> None:
        self.stack, self.idents, self.period = stack, idents, period
        self.started = self.withdrawn = 0
        self.bad_exits: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="churn", daemon=True)

    def _run(self) -> None:
        turn = 0
        while not self._stop.wait(self.period):
            ident = self.idents[turn % len(self.idents)]
            turn += 1
            if ident in self.stack.announcers:
                code = self.stack.withdraw(ident)
                self.withdrawn += 1
                if code != 0:
                    self.bad_exits.append(code)
            else:
                self.stack.announce(ident)
                self.started += 1

    def __enter__(self) -> Churner:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(60)


@dataclass
class FaultResult:
    """What one fault run did and saw: the figures of docs/reliability.md."""

    name: str
    requests: int = 0
    failed: int = 0
    lost: dict[str, set[str]] = field(default_factory=dict)
    stale: set[str] = field(default_factory=set)
    exited: dict[str, int | None] = field(default_factory=dict)
    log_lines: dict[str, int] = field(default_factory=dict)
    facts: dict[str, object] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    @property
    def lost_count(self) -> int:
        return sum(len(v) for v in self.lost.values())


def store_on(endpoints: str) -> EtcdStore:
    return EtcdStore(EtcdSettings.from_strings(endpoints, timeout=2))


def settle(stack: Stack, store: EtcdStore, timeout: float) -> tuple[dict[str, set[str]], set[str]]:
    """Wait (up to `timeout`) for every live instance to be present and no stale one left."""
    def done() -> bool:
        return not any(stack.missing(store).values()) and not stack.stale(store)

    try:
        wait_for(done, timeout, interval=0.2, what="records settled")
    except AssertionError:
        pass  # the caller asserts on what is missing, with names
    return stack.missing(store), stack.stale(store)


def cluster_faults(work: Path, docker: Any, prefix: str, step: float = 3.0) -> FaultResult:
    """3-node cluster: kill the leader, bring it back, kill the new leader, bring it back.

    Announcers churn all along (started and withdrawn every 0.7 s); two stable
    instances keep the virtual host routable, and a request loop counts failures.
    """
    result = FaultResult("etcd cluster: leader killed, then another member")
    cluster = EtcdCluster(work / "cluster").start()
    store = store_on(cluster.endpoints)
    stack = Stack(work, cluster.endpoints, prefix, docker)
    try:
        stable, churn = ["s1", "s2"], ["c1", "c2", "c3"]
        for ident in stable + churn:
            stack.add_container(ident)
        stack.start()
        for ident in stable:
            stack.announce(ident)
        wait_for(lambda: not any(stack.missing(store).values()), 40, interval=0.2,
                 what="stable instances routed")
        killed = []
        with RequestLoop(stack.http_port) as loop, Churner(stack, churn) as churner:
            for _ in range(2):
                time.sleep(step)  # churn with every member up, then fault
                leader = cluster.leader()
                leader.kill()
                killed.append(leader.name)
                new = cluster.leader()
                result.facts.setdefault("leaders", []).append(new.name)  # type: ignore[union-attr]
                time.sleep(step)  # churn on two members
                leader.start()
        result.requests, result.failed, result.errors = loop.sent, loop.failed, loop.errors
        result.facts.update(killed=killed, started=churner.started, withdrawn=churner.withdrawn,
                            bad_exits=churner.bad_exits, live=sorted(stack.live()))
        # A withdrawal that raced a leader change may leave its record to expire with the TTL.
        result.lost, result.stale = settle(stack, store, stack.ttl + 15)
        result.exited = stack.exited()
    finally:
        stack.close()
        store.close()
        cluster.stop()
    return result


def etcd_outage(work: Path, docker: Any, prefix: str, down: float) -> FaultResult:
    """Single etcd killed for `down` seconds under register, listen, dns and two announcers."""
    import dns.message
    import dns.query

    result = FaultResult(f"etcd down {down:.0f} s (single node)")
    etcd = EtcdServer(work / "etcd-data").start()
    store = store_on(etcd.endpoint)
    stack = Stack(work, etcd.endpoint, prefix, docker, dns=True, announce_ttl=15,
                  announce_interval=5)
    name = f"o1.{VHOST}.internal.buoy.internal."

    def dns_ok() -> bool:
        try:
            reply = dns.query.udp(dns.message.make_query(name, "A"), "127.0.0.1",
                                  port=stack.dns_port, timeout=1)
        except (OSError, dns.exception.DNSException):
            return False
        return any(rd.to_text() == "127.0.0.1" for rrset in reply.answer for rd in rrset)

    try:
        for ident in ("o1", "o2", "o3"):
            stack.add_container(ident)
        stack.start()
        stack.announce("o1")
        stack.announce("o2")
        wait_for(lambda: not any(stack.missing(store).values()) and dns_ok(), 40, interval=0.2,
                 what="instances routed and answered")
        dns_sent = dns_failed = 0
        with RequestLoop(stack.http_port) as loop:
            stack.mark_logs()
            etcd.kill()
            deadline = time.monotonic() + down
            while time.monotonic() < deadline:  # DNS keeps answering from its last index
                dns_sent += 1
                dns_failed += 0 if dns_ok() else 1
                time.sleep(0.5)
            result.log_lines = stack.lines_since_mark()
            result.exited = stack.exited()
            etcd.start()
            back = time.monotonic()
            result.lost, result.stale = settle(stack, store, stack.interval + 10)
            result.facts["back_s"] = round(time.monotonic() - back, 2)
            stack.announce("o3")  # a change after the outage: the watches resumed
            wait_for(lambda: not any(stack.missing(store).values()), 20, interval=0.2,
                     what="o3 routed after the outage")
            result.facts["new_routed_s"] = round(time.monotonic() - back, 2)
        result.requests, result.failed, result.errors = loop.sent, loop.failed, loop.errors
        result.facts.update(dns_queries=dns_sent, dns_failed=dns_failed)
        result.exited.update(stack.exited())
    finally:
        stack.close()
        store.close()
        etcd.stop()
    return result
