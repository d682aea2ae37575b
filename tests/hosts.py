"""Three Docker hosts on one machine, for the multi-host e2e test, demo/cluster.sh and
bench/cluster.py (no tests here).

Each "host" is a network namespace with a veth onto one bridge this harness creates in
the root namespace (never docker0), an address from a private /24 that no address or
route of the machine overlaps (10.231.x.0/24), and its own Docker engine (own `--bip`,
data root, exec root, pidfile, cgroup parent and socket `unix:///run/buoy-<tag>-hN/docker.sock`)
started inside the namespace, so its iptables rules live only there. Every host runs its
own `buoy register --host-ip <its address>` against its own engine and a `buoy listen`
frontend on `<its address>:8080` (HTTP) with TCP ambassador ports on its docker0 gateway.
A three-member etcd cluster runs in the root namespace on the bridge address, and one
`buoy dns` on 127.0.0.1.

Daemons are started with `nsenter --net=/var/run/netns/<ns>` rather than `ip netns exec`:
the latter remounts /sys, which hides the cgroup mounts dockerd needs.

Everything made is written to a manifest (`<work>/manifest.json`) as it is made, so
`cleanup(manifest)` undoes it even from another process (demo/cluster.sh's trap):
processes by PID (checked against their start time), containers, mounts, namespaces, the
bridge, the one iptables rule, cgroup directories and data directories.
"""

from __future__ import annotations

import http.client
import ipaddress
import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import docker.errors
from cluster_helpers import ClusterMember, EtcdCluster
from docker_helpers import BUSYBOX
from etcd_server import free_port, wait_for

from buoy.listen.haproxy import MasterSocket

IMAGE = "buoy-cluster-busybox:latest"
APPLETS = ("sh", "httpd", "sleep", "nc", "cat", "echo", "wget", "hostname", "ls")
LABEL = "buoy.cluster"
WEB_PATH = "/internal/app1/dev/web"
DB_PATH = "/internal/app1/dev/db"
LISTEN_PATH = "/services/internal/app1/dev"
WEB_VHOST = "web.dev.app1"
WEB_BACKEND = "http_internal_app1_dev_web"
DB_PORT = 7000
HTTP_PORT = 8080
ZONE = "buoy.internal."
WEB_NAME = f"web.dev.app1.internal.{ZONE}"


def run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), check=check, capture_output=True, text=True)


def pick_subnet(second: int = 231) -> ipaddress.IPv4Network:
    """A 10.<second>.x.0/24 that no address or route of this machine overlaps."""
    used: list[ipaddress.IPv4Network] = []
    for line in run("ip", "-4", "-o", "addr", "show").stdout.splitlines():
        parts = line.split()
        if "inet" in parts:
            used.append(ipaddress.IPv4Interface(parts[parts.index("inet") + 1]).network)
    for row in json.loads(run("ip", "-4", "-j", "route", "show", "table", "all").stdout or "[]"):
        dst = row.get("dst", "")
        if dst and dst != "default":
            try:
                used.append(ipaddress.IPv4Network(dst, strict=False))
            except ValueError:
                pass
    start = os.getpid() % 250
    for k in range(250):
        net = ipaddress.IPv4Network(f"10.{second}.{(start + k) % 250 + 1}.0/24")
        if not any(net.overlaps(u) for u in used):
            return net
    raise RuntimeError(f"no free 10.{second}.x.0/24")


def proc_start_time(pid: int) -> str | None:
    """The start time of a live process (None when gone or a zombie)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return None if fields[0] in ("Z", "X") else fields[19]


def netns_pids(netns: str) -> set[int]:
    out = run("ip", "netns", "pids", netns, check=False).stdout
    return {int(p) for p in out.split() if p.isdigit()}


CGROUP = Path("/sys/fs/cgroup")


def cgroup_dirs(parent: str) -> list[Path]:
    """Every cgroup directory of `parent` (v1: one per controller; v2: one)."""
    name = parent.strip("/")
    dirs = [d / name for d in CGROUP.iterdir() if (d / name).is_dir()] if CGROUP.exists() else []
    if (CGROUP / name).is_dir():
        dirs.append(CGROUP / name)
    return dirs


def cgroup_pids(parent: str) -> set[int]:
    pids: set[int] = set()
    for d in cgroup_dirs(parent):
        for procs in d.rglob("cgroup.procs"):
            try:
                pids.update(int(p) for p in procs.read_text().split())
            except OSError:
                pass
    return pids


def kill_all(pids_of: Any, timeout: float = 15.0) -> int:
    """SIGKILL every PID `pids_of()` returns until it returns none; how many were killed."""
    killed: set[int] = set()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pids = pids_of() - {os.getpid()}
        if not pids:
            return len(killed)
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
                killed.add(pid)
            except ProcessLookupError:
                pass
        time.sleep(0.05)
    raise RuntimeError("processes survived SIGKILL")


def unmount_under(*roots: Path) -> None:
    """Lazily unmount every mount point under `roots`, deepest first (a host's reboot)."""
    prefixes = [str(r.resolve()) for r in roots]
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].encode().decode("unicode_escape")
        if any(point == p or point.startswith(p + "/") for p in prefixes):
            points.append(point)
    for point in sorted(set(points), key=len, reverse=True):
        run("umount", "-l", point, check=False)


def rootfs_tar() -> bytes:
    import io
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for d in ("bin", "www", "tmp", "etc"):
            info = tarfile.TarInfo(d)
            info.type, info.mode = tarfile.DIRTYPE, 0o1777 if d == "tmp" else 0o755
            tar.addfile(info)
        tar.add(BUSYBOX, arcname="bin/busybox")
        for applet in APPLETS:
            info = tarfile.TarInfo(f"bin/{applet}")
            info.type, info.linkname = tarfile.SYMTYPE, "busybox"
            tar.addfile(info)
    return buf.getvalue()


def http_get(ip: str, port: int, host: str, timeout: float = 10.0) -> tuple[int, str]:
    """GET / with a Host header on a new connection: (status, body), or (0, error)."""
    conn = http.client.HTTPConnection(ip, port, timeout=timeout)
    try:
        conn.request("GET", "/", headers={"Host": host, "Connection": "close"})
        resp = conn.getresponse()
        return resp.status, resp.read().decode(errors="replace")
    except (OSError, http.client.HTTPException) as exc:
        return 0, f"{type(exc).__name__}: {exc}"
    finally:
        conn.close()


class Manifest:
    """What this run made, on disk as it is made, so another process can undo it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.items: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def add(self, **item: Any) -> None:
        with self._lock:
            self.items.append(item)
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps(self.items, indent=1))
            tmp.replace(self.path)

    def pid(self, proc: subprocess.Popen[bytes], what: str) -> None:
        self.add(kind="pid", pid=proc.pid, start=proc_start_time(proc.pid), what=what)


def _kill_pid(pid: int, start: str | None, sig: signal.Signals) -> bool:
    if start is None or proc_start_time(pid) != start:
        return False  # gone, or the PID now belongs to another process
    try:
        os.kill(pid, sig)
        return True
    except ProcessLookupError:
        return False


def cleanup(manifest_path: Path, log: Any = print) -> None:
    """Undo everything the manifest lists, in reverse order; safe to run twice."""
    try:
        items: list[dict[str, Any]] = json.loads(manifest_path.read_text())
    except (OSError, ValueError):
        return
    engines = [i for i in items if i["kind"] == "engine"]
    for e in engines:  # containers first, while their engine answers
        try:
            client = docker.DockerClient(base_url=e["url"], timeout=10)
            for c in client.containers.list(all=True):
                c.remove(force=True)
            client.close()
        except Exception:  # noqa: BLE001 - a dead engine: its processes are killed below
            pass
    for item in reversed(items):
        if item["kind"] == "pid" and _kill_pid(item["pid"], item["start"], signal.SIGTERM):
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and proc_start_time(item["pid"]) == item["start"]:
                time.sleep(0.1)
            _kill_pid(item["pid"], item["start"], signal.SIGKILL)
    for e in engines:
        if Path(f"/var/run/netns/{e['netns']}").exists():
            kill_all(lambda e=e: netns_pids(e["netns"]) | cgroup_pids(e["cgroup"]))
        else:
            kill_all(lambda e=e: cgroup_pids(e["cgroup"]))
        unmount_under(*(Path(p) for p in e["dirs"]))
    for item in reversed(items):
        kind = item["kind"]
        if kind == "netns":
            run("ip", "netns", "delete", item["name"], check=False)
        elif kind == "link":
            run("ip", "link", "delete", item["name"], check=False)
        elif kind == "iptables":
            while run("iptables", "-w", "-D", *item["rule"], check=False).returncode == 0:
                pass
        elif kind == "cgroup":
            for d in cgroup_dirs(item["name"]):
                subs = [p for p in d.rglob("*") if p.is_dir()]
                for sub in [*sorted(subs, key=lambda p: len(str(p)), reverse=True), d]:
                    try:
                        sub.rmdir()
                    except OSError:
                        pass
        elif kind == "dir":
            run("rm", "-rf", item["path"], check=False)
    manifest_path.unlink(missing_ok=True)
    log(f"cleaned up {len(items)} things listed in {manifest_path}")


class BridgeMember(ClusterMember):
    """An etcd member on the bridge address, so every host namespace reaches it."""

    ip = "127.0.0.1"

    @property
    def endpoint(self) -> str:
        return f"http://{self.ip}:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://{self.ip}:{self.peer_port}"


class BridgeEtcd(EtcdCluster):
    """EtcdCluster's members, on `ip` instead of 127.0.0.1."""

    def __init__(self, base: Path, ip: str, size: int = 3) -> None:
        members = [BridgeMember(base / f"m{i}", name=f"m{i}") for i in range(size)]
        for m in members:
            m.ip = ip
        self.members = list(members)
        initial = ",".join(f"{m.name}={m.peer_url}" for m in self.members)
        token = f"buoy-{os.getpid()}-{int(time.time())}"
        for member in self.members:
            member.initial_cluster, member.token = initial, token


@dataclass
class Host:
    """One Docker host: a namespace, its engine, its register and its listen frontend."""

    name: str
    netns: str
    ip: str
    veth: str
    bip: str
    root: Path
    run_dir: Path
    cgroup: str
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    containers: dict[str, str] = field(default_factory=dict)  # name -> id

    @property
    def url(self) -> str:
        return f"unix://{self.run_dir}/docker.sock"

    @property
    def gateway(self) -> str:
        return self.bip.split("/")[0]

    def client(self, timeout: int = 30) -> Any:
        return docker.DockerClient(base_url=self.url, timeout=timeout)

    def frontend_routes(self, backend: str = WEB_BACKEND) -> set[str]:
        """`ip:port` of the servers this frontend's HAProxy sends new requests to now: "UP"
        (also "UP 1/2", going down) or "no check"; not DRAIN, MAINT, DOWN or NOLB."""
        out = MasterSocket(self.root / "listen" / "master.sock", timeout=3).command(
            "@1 show stat")
        rows = [line.split(",") for line in out.splitlines() if line and not line.startswith("#")]
        header = out.splitlines()[0].lstrip("# ").split(",") if out.startswith("#") else []
        if not header:
            return set()
        col = {name: i for i, name in enumerate(header)}
        return {r[col["addr"]] for r in rows
                if len(r) > col["addr"] and r[0] == backend and r[1] not in ("BACKEND", "FRONTEND")
                and r[col["status"]].split(" ")[0] in ("UP", "no")  # "UP 1/2", "no check"
                and not r[col["addr"]].startswith("0.0.0.0")}


class Cluster:
    """The bridge, the etcd cluster, `buoy dns` and three hosts with their agents."""

    def __init__(self, work: Path, hosts: int = 3, register_ttl: int = 3,
                 log: Any = None) -> None:
        self.work = work.resolve()
        self.work.mkdir(parents=True, exist_ok=True)
        self.tag = f"{os.getpid() % 0x10000:04x}"
        self.manifest = Manifest(self.work / "manifest.json")
        self.register_ttl = register_ttl
        self.log = log or (lambda *a: None)
        self.subnet = pick_subnet()
        self.gw = str(self.subnet.network_address + 1)
        self.bridge = f"bb{self.tag}"
        self.hosts = [
            Host(name=f"h{i}", netns=f"buoy-{self.tag}-h{i}", ip=str(self.subnet.network_address + 10 + i),
                 veth=f"bv{self.tag}h{i}", bip=f"172.28.{i}.1/24", root=self.work / f"h{i}",
                 run_dir=Path(f"/run/buoy-{self.tag}-h{i}"), cgroup=f"buoy-{self.tag}-h{i}")
            for i in range(1, hosts + 1)]
        self.etcd: BridgeEtcd | None = None
        self.dns_port = 0
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    # -- network --------------------------------------------------------------------------
    def _network(self) -> None:
        self.manifest.add(kind="link", name=self.bridge)
        run("ip", "link", "add", self.bridge, "type", "bridge")
        run("ip", "addr", "add", f"{self.gw}/{self.subnet.prefixlen}", "dev", self.bridge)
        run("ip", "link", "set", self.bridge, "up")
        # Bridged frames pass the root namespace's FORWARD chain (br_netfilter), whose
        # policy the machine's dockerd set to DROP: let frames between our hosts through.
        rule = ["FORWARD", "-i", self.bridge, "-o", self.bridge, "-m", "comment",
                "--comment", f"buoy-cluster-{self.tag}", "-j", "ACCEPT"]
        self.manifest.add(kind="iptables", rule=rule)
        run("iptables", "-w", "-I", *rule)
        for h in self.hosts:
            self.manifest.add(kind="netns", name=h.netns)
            run("ip", "netns", "add", h.netns)
            run("ip", "link", "add", h.veth, "type", "veth", "peer", "name", "eth0",
                "netns", h.netns)
            run("ip", "link", "set", h.veth, "master", self.bridge, "up")
            run("ip", "-n", h.netns, "link", "set", "lo", "up")
            run("ip", "-n", h.netns, "addr", "add", f"{h.ip}/{self.subnet.prefixlen}", "dev", "eth0")
            run("ip", "-n", h.netns, "link", "set", "eth0", "up")
            run("ip", "-n", h.netns, "route", "add", "default", "via", self.gw)

    def _spawn(self, argv: list[str], log_path: Path, what: str, netns: str | None = None,
               env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        if netns:
            argv = ["nsenter", f"--net=/var/run/netns/{netns}", *argv]
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                    env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
                                    start_new_session=True)
        self.manifest.pid(proc, what)
        return proc

    # -- engines ----------------------------------------------------------------------------
    def start_engine(self, h: Host) -> None:
        (h.root / "docker.pid").unlink(missing_ok=True)
        (h.run_dir / "exec" / "containerd" / "containerd.pid").unlink(missing_ok=True)
        h.procs["dockerd"] = self._spawn(
            ["/usr/sbin/dockerd", "--data-root", str(h.root / "data"),
             "--exec-root", str(h.run_dir / "exec"), "--pidfile", str(h.root / "docker.pid"),
             "-H", h.url, "--bip", h.bip, "--cgroup-parent", f"/{h.cgroup}",
             "--iptables=true", "--ip-forward=true", "--log-level", "warn"],
            h.root / "dockerd.log", f"dockerd {h.name}", netns=h.netns)

    def wait_engine(self, h: Host, timeout: float = 60) -> None:
        def ping() -> bool:
            proc = h.procs["dockerd"]
            if proc.poll() is not None:
                tail = (h.root / "dockerd.log").read_text(errors="replace")[-1500:]
                raise RuntimeError(f"dockerd of {h.name} exited {proc.returncode}: {tail}")
            try:
                c = h.client(timeout=3)
                try:
                    return bool(c.ping())
                finally:
                    c.close()
            except Exception:  # noqa: BLE001 - not up yet
                return False

        wait_for(ping, timeout, interval=0.2, what=f"dockerd of {h.name}")

    def load_image(self, h: Host) -> None:
        c = h.client()
        try:
            try:
                c.images.get(IMAGE)
            except docker.errors.ImageNotFound:
                repo, _, tag = IMAGE.partition(":")
                c.api.import_image_from_data(rootfs_tar(), repository=repo, tag=tag)
        finally:
            c.close()

    # -- agents -----------------------------------------------------------------------------
    @property
    def endpoints(self) -> str:
        assert self.etcd is not None
        return self.etcd.endpoints

    def agent_env(self) -> dict[str, str]:
        return {"BUOY_ETCD_ENDPOINTS": self.endpoints, "BUOY_ETCD_TIMEOUT": "2",
                "BUOY_LOG_LEVEL": "info"}

    def start_agents(self, h: Host) -> None:
        buoy = [sys.executable, "-m", "buoy"]
        h.procs["register"] = self._spawn(
            [*buoy, "register", "--host-id", h.name, "--host-ip", h.ip,
             "--ttl", str(self.register_ttl), "--docker-host", h.url],
            h.root / "buoy.register.log", f"register {h.name}", netns=h.netns, env=self.agent_env())
        h.procs["listen"] = self._spawn(
            [*buoy, "listen", "--listen-path", LISTEN_PATH,
             "--http-bind", f"{h.ip}:{HTTP_PORT}", "--tcp-bind", h.gateway,
             "--state-dir", str(h.root / "listen")],
            h.root / "buoy.listen.log", f"listen {h.name}", netns=h.netns, env=self.agent_env())

    # -- containers -------------------------------------------------------------------------
    def run_service(self, h: Host, name: str, path: str, port: int, type_: str) -> str:
        """A label-only busybox httpd on `port` that answers `<name> on <host>`; its ID."""
        c = h.client()
        try:
            made = c.containers.run(
                IMAGE, ["/bin/sh", "-c", f"echo '{name} on {h.name}' > /www/index.html && "
                        f"exec /bin/httpd -f -p {port} -h /www"],
                name=name, hostname=name, detach=True, stop_signal="SIGKILL",
                labels={LABEL: self.tag, "buoy.path": path, "buoy.port": str(port),
                        "buoy.type": type_},
                ports={f"{port}/tcp": (h.ip, None)}, restart_policy={"Name": "always"})
            h.containers[name] = made.id
            return str(made.id)
        finally:
            c.close()

    def published(self, h: Host, name: str, port: int) -> int:
        c = h.client()
        try:
            ports = c.containers.get(name).attrs["NetworkSettings"]["Ports"][f"{port}/tcp"]
            return int(ports[0]["HostPort"])
        finally:
            c.close()

    def exec_in(self, h: Host, name: str, *cmd: str) -> tuple[int, str]:
        c = h.client()
        try:
            res = c.containers.get(name).exec_run(list(cmd))
            return int(res.exit_code), res.output.decode(errors="replace")
        finally:
            c.close()

    def ambassador(self, h: Host, name: str) -> tuple[int, str]:
        """From container `name` on `h`: the db through its host's TCP ambassador port."""
        return self.exec_in(h, name, "sh", "-c", r'printf "GET / HTTP/1.0\r\n\r\n" | '
                            f"nc -w 3 {h.gateway} {DB_PORT}")

    # -- the whole thing ----------------------------------------------------------------------
    def start(self, db_on: tuple[str, ...] = ("h2", "h3")) -> Cluster:
        self.manifest.add(kind="dir", path=str(self.work / "etcd"))
        for h in self.hosts:
            self.manifest.add(kind="dir", path=str(h.run_dir))
            self.manifest.add(kind="dir", path=str(h.root / "data"))
            self.manifest.add(kind="cgroup", name=h.cgroup)
            self.manifest.add(kind="engine", url=h.url, netns=h.netns, cgroup=h.cgroup,
                              dirs=[str(h.root), str(h.run_dir)])
        self.log(f"bridge {self.bridge} {self.gw}/{self.subnet.prefixlen}; hosts "
                 + ", ".join(f"{h.name}={h.ip} (netns {h.netns})" for h in self.hosts))
        self._network()
        for h in self.hosts:
            h.run_dir.mkdir(parents=True, exist_ok=True)
            self.start_engine(h)
        self.etcd = BridgeEtcd(self.work / "etcd", self.gw)
        for m in self.etcd.members:
            m.start(wait=False)
            assert m.proc is not None
            self.manifest.pid(m.proc, f"etcd {m.name}")
        for m in self.etcd.members:
            m.wait_ready(30)
        self.log(f"etcd cluster: {self.endpoints}")
        self.dns_port = free_port()
        self.procs["dns"] = self._spawn(
            [sys.executable, "-m", "buoy", "dns", "--listen", f"127.0.0.1:{self.dns_port}"],
            self.work / "dns.log", "dns", env=self.agent_env())
        for h in self.hosts:
            self.wait_engine(h)
            self.load_image(h)
            self.start_agents(h)
        self.log("engines up (busybox image imported into each), register and listen started")
        for h in self.hosts:
            self.run_service(h, f"web-{h.name}", WEB_PATH, 80, "HTTP")
            if h.name in db_on:
                self.run_service(h, f"db-{h.name}", DB_PATH, DB_PORT, "TCP")
        self.wait_routed(self.hosts, self.hosts, 60)
        return self

    def host(self, name: str) -> Host:
        return next(h for h in self.hosts if h.name == name)

    def routes(self, frontend: Host, web_of: Host) -> bool:
        """Does `frontend` route `web-<web_of>` (pinned by its ID)?"""
        status, body = http_get(frontend.ip, HTTP_PORT, f"web-{web_of.name}.{WEB_VHOST}", timeout=5)
        return status == 200 and f"web-{web_of.name} on {web_of.name}" in body

    def wait_routed(self, frontends: list[Host], webs: list[Host], timeout: float) -> None:
        for f in frontends:
            for w in webs:
                def routed(f: Host = f, w: Host = w) -> bool:
                    return self.routes(f, w)

                wait_for(routed, timeout, interval=0.1,
                         what=f"web-{w.name} routed by the frontend of {f.name}")

    def kill_host(self, h: Host) -> int:
        """Link down, then SIGKILL everything of the host: engine, agents, containers."""
        run("ip", "link", "set", h.veth, "down")
        killed = kill_all(lambda: netns_pids(h.netns) | cgroup_pids(h.cgroup))
        for proc in h.procs.values():
            proc.wait(10)
        h.procs.clear()
        return killed

    def restore_host(self, h: Host) -> None:
        """Link up, then the engine (its containers restart by policy) and its agents."""
        unmount_under(h.root / "data", h.run_dir)  # what a reboot would have cleared
        run("ip", "link", "set", h.veth, "up")
        self.start_engine(h)
        self.wait_engine(h)
        self.start_agents(h)

    def stop_etcd_member(self, leader: bool = False) -> BridgeMember:
        """SIGKILL one etcd member: a follower unless `leader`."""
        assert self.etcd is not None
        lead = self.etcd.leader()
        member = lead if leader else next(m for m in self.etcd.alive() if m is not lead)
        member.kill()
        return member  # type: ignore[return-value]

    def close(self) -> None:
        """Undo everything (containers, processes, mounts, namespaces, bridge, rule, dirs)."""
        cleanup(self.manifest.path, log=self.log)
        procs = [*self.procs.values(), *(p for h in self.hosts for p in h.procs.values())]
        if self.etcd is not None:
            procs += [m.proc for m in self.etcd.members if m.proc is not None]
        for proc in procs:  # all dead by now: reap them
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def store_for(endpoints: str) -> Any:
    from buoy.etcd.settings import EtcdSettings
    from buoy.etcd.store import EtcdStore

    return EtcdStore(EtcdSettings.from_strings(endpoints, timeout=2))


def services(store: Any, path: str = WEB_PATH) -> dict[str, tuple[str, str, int]]:
    """The /services records under `path`: instance ID -> (HOST, IP, EXT_PORT).

    A read that meets a member just killed fails once; the client then fails over.
    """
    from buoy.etcd.records import ServiceRecord
    from buoy.etcd.store import StoreUnavailable

    for attempt in range(10):
        try:
            kvs = store.get_prefix(f"/services{path}/")[1]
            break
        except StoreUnavailable:
            if attempt == 9:
                raise
            time.sleep(0.2)
    out: dict[str, tuple[str, str, int]] = {}
    for kv in kvs:
        rec = ServiceRecord.from_json(kv.value)
        out[kv.key.rsplit("/", 1)[1]] = (rec.host, rec.ip, rec.ext_port)
    return out


def dns_web(port: int, name: str = WEB_NAME) -> tuple[set[str], set[int]]:
    """What `buoy dns` answers for `name`: the A addresses and the SRV ports."""
    import dns.exception
    import dns.message
    import dns.query
    import dns.rdatatype

    answers: dict[str, set[Any]] = {"A": set(), "SRV": set()}
    for qtype in answers:
        try:
            reply = dns.query.udp(dns.message.make_query(name, qtype), "127.0.0.1", port=port,
                                  timeout=2)
        except (OSError, dns.exception.DNSException):
            continue
        for rrset in reply.answer:
            for rd in rrset:
                if rrset.rdtype == dns.rdatatype.A:
                    answers["A"].add(rd.to_text())
                elif rrset.rdtype == dns.rdatatype.SRV:
                    answers["SRV"].add(int(rd.port))
    return answers["A"], answers["SRV"]


class Load:
    """GETs the web service through `frontends` in turn, one new connection each, until
    stopped or `limit` requests were sent; counts failures and the slowest answer."""

    def __init__(self, frontends: list[Host], limit: int = 20000, timeout: float = 10.0) -> None:
        self.frontends, self.limit, self.timeout = frontends, limit, timeout
        self.sent = self.failed = 0
        self.slowest = 0.0
        self.errors: list[str] = []
        self.bodies: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="load", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set() and self.sent < self.limit:
            f = self.frontends[self.sent % len(self.frontends)]
            start = time.monotonic()
            status, body = http_get(f.ip, HTTP_PORT, WEB_VHOST, timeout=self.timeout)
            self.slowest = max(self.slowest, time.monotonic() - start)
            self.sent += 1
            if status == 200:
                self.bodies[body.strip()] = self.bodies.get(body.strip(), 0) + 1
            else:
                self.failed += 1
                if len(self.errors) < 20:
                    self.errors.append(f"via {f.name}: {status} {body[:80]}")
            self._stop.wait(0.01)

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(self.timeout + 5)
