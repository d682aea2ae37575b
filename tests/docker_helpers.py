"""Docker for register's tests and benchmark: busybox image, test containers, processes."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import docker.errors
from etcd_server import wait_for

IMAGE = "buoy-test-busybox:latest"
TEST_LABEL = "buoy.test"
BUSYBOX = "/bin/busybox"
APPLETS = ("sh", "httpd", "sleep", "nc", "cat", "echo", "ls", "hostname")


def docker_client() -> Any:
    return docker.DockerClient(base_url="unix:///var/run/docker.sock", timeout=60)


def rootfs_tar() -> bytes:
    """A rootfs holding /bin/busybox, a few applet links and /www/index.html."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for d in ("bin", "www", "tmp", "etc"):
            info = tarfile.TarInfo(d)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
        tar.add(BUSYBOX, arcname="bin/busybox")
        for applet in APPLETS:
            info = tarfile.TarInfo(f"bin/{applet}")
            info.type, info.linkname = tarfile.SYMTYPE, "busybox"
            tar.addfile(info)
        page = b"buoy test\n"
        info = tarfile.TarInfo("www/index.html")
        info.size = len(page)
        tar.addfile(info, io.BytesIO(page))
    return buf.getvalue()


def ensure_image(client: Any, image: str = IMAGE) -> str:
    """Import the busybox image once (reused when present): no registry is needed."""
    try:
        client.images.get(image)
        return image
    except docker.errors.ImageNotFound:
        pass
    repo, _, tag = image.partition(":")
    client.api.import_image_from_data(rootfs_tar(), repository=repo, tag=tag or "latest")
    client.images.get(image)
    return image


def run_httpd(client: Any, *, hostname: str | None = None, env: dict[str, str] | None = None,
              labels: dict[str, str] | None = None, host_port: int | None = None,
              port: int = 80, publish: bool = True, start: bool = True) -> Any:
    """A busybox httpd container with PORT published on 127.0.0.1 (ephemeral by default).

    With start=False it is only created (a benchmark starts many at once).
    """
    ports = {f"{port}/tcp": ("127.0.0.1", host_port)} if publish else {}
    make = client.containers.run if start else client.containers.create
    return make(
        IMAGE, ["/bin/busybox", "httpd", "-f", "-p", str(port), "-h", "/www"], detach=True,
        hostname=hostname, environment=env or {}, labels={TEST_LABEL: "1", **(labels or {})},
        ports=ports, stop_signal="SIGKILL")


def published_port(container: Any, port: int = 80) -> int:
    container.reload()
    return int(container.attrs["NetworkSettings"]["Ports"][f"{port}/tcp"][0]["HostPort"])


def remove_test_containers(client: Any) -> None:
    for c in client.containers.list(all=True, filters={"label": f"{TEST_LABEL}=1"}):
        try:
            c.remove(force=True)
        except docker.errors.APIError:
            pass


class RegisterProcess:
    """`buoy register` as a subprocess with its log in a file."""

    def __init__(self, log_path: Path, endpoint: str, prefix: str, *args: str,
                 env: dict[str, str] | None = None) -> None:
        self.log_path = log_path
        self.argv = [sys.executable, "-c", "from buoy.cli import main; main()", "register",
                     "--etcd-endpoints", endpoint, "--prefix", prefix, *args]
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> RegisterProcess:
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        self.proc = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT,
                                     env=self.env)
        log.close()
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_log(self, text: str, count: int = 1, timeout: float = 20.0) -> None:
        wait_for(lambda: self.log().count(text) >= count, timeout, what=f"log {text!r}")

    def terminate(self, timeout: float = 10.0) -> int:
        """SIGTERM and wait for the exit code."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def running(procs: list[RegisterProcess]) -> Iterator[None]:
    """Helper for fixtures: kill every register process at the end."""
    try:
        yield
    finally:
        for p in procs:
            p.kill()


def elapsed_ms(start: float) -> float:
    return (time.monotonic() - start) * 1000


class PrivateDockerd:
    """A second dockerd in a network namespace of its own, which a test may restart.

    The machine's dockerd is shared, so it is never restarted; this one has its
    own data root, exec root, pidfile, socket and netns (its docker0 bridge and
    iptables rules live only there). `nsenter --net` keeps the host's cgroup
    mounts visible, which `ip netns exec` would hide.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.netns = f"buoyt{os.getpid() % 100000}{int(time.time()) % 1000}"
        self.socket = root / "docker.sock"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    def start(self) -> PrivateDockerd:
        if not Path(f"/var/run/netns/{self.netns}").exists():
            subprocess.run(["ip", "netns", "add", self.netns], check=True)
            subprocess.run(["ip", "-n", self.netns, "link", "set", "lo", "up"], check=True)
        self.root.mkdir(parents=True, exist_ok=True)
        log = open(self.root / "dockerd.log", "ab")  # noqa: SIM115 - handed to the child
        self.proc = subprocess.Popen(
            ["nsenter", f"--net=/var/run/netns/{self.netns}", "/usr/sbin/dockerd",
             "--data-root", str(self.root / "data"), "--exec-root", str(self.root / "exec"),
             "--pidfile", str(self.root / "dockerd.pid"), "-H", self.url],
            stdout=log, stderr=subprocess.STDOUT)
        log.close()
        wait_for(self._ping, 60, interval=0.2, what="private dockerd")
        return self

    def _ping(self) -> bool:
        try:
            client = docker.DockerClient(base_url=self.url, timeout=5)
            try:
                return bool(client.ping())
            finally:
                client.close()
        except Exception:  # noqa: BLE001 - not up yet
            return False

    def client(self) -> Any:
        return docker.DockerClient(base_url=self.url, timeout=60)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def destroy(self) -> None:
        self.stop()
        subprocess.run(["ip", "netns", "delete", self.netns], check=False)
        subprocess.run(["rm", "-rf", str(self.root)], check=False)
