"""The e2e scenario's pieces: the images, an etcd container, one Docker network, apps."""

from __future__ import annotations

import http.client
import io
import subprocess
import tarfile
import time
import uuid
from pathlib import Path
from typing import Any

import docker
import docker.errors
from docker_helpers import TEST_LABEL, docker_client

ROOT = Path(__file__).resolve().parent.parent
BASE, FRONTEND, ETCD_IMAGE = "buoy/base", "buoy/haproxy", "buoy-e2e-etcd:latest"

# A web instance: answers every GET with its hostname (= its buoy ID).
WEB_APP = """
import http.server, socket
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = socket.gethostname().encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(("", 8000), H).serve_forever()
"""

# The db: a TCP echo server that prefixes its hostname.
DB_APP = """
import socket, socketserver
class H(socketserver.BaseRequestHandler):
    def handle(self):
        self.request.sendall(socket.gethostname().encode() + b":" + self.request.recv(1024))
socketserver.ThreadingTCPServer.allow_reuse_address = True
socketserver.ThreadingTCPServer(("", 5432), H).serve_forever()
"""

# Run inside a web container: talk to the db through the local ambassador port.
DB_CLIENT = """
import socket
s = socket.create_connection(("127.0.0.1", 5432), 3)
s.sendall(b"ping")
print(s.recv(1024).decode())
"""


def build_images() -> tuple[float, bool]:
    """Run images/build.sh (it reuses the base OS image and Docker's layer cache).

    Returns its seconds and whether the base OS image was reused.
    """
    start = time.monotonic()
    res = subprocess.run(["bash", str(ROOT / "images" / "build.sh")], capture_output=True, text=True,
                         timeout=900)
    if res.returncode != 0:
        raise RuntimeError(f"images/build.sh failed:\n{res.stdout}\n{res.stderr[-4000:]}")
    return time.monotonic() - start, "base-os reused" in res.stdout


def build_etcd_image(client: Any) -> str:
    """buoy/base plus the host's etcd binary (no registry needed)."""
    buf = io.BytesIO()
    dockerfile = (f"FROM {BASE}\nCOPY etcd /usr/local/bin/etcd\n"
                  'ENTRYPOINT ["/usr/local/bin/etcd"]\n').encode()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(dockerfile)
        tar.addfile(info, io.BytesIO(dockerfile))
        tar.add("/usr/bin/etcd", arcname="etcd")
    buf.seek(0)
    client.images.build(fileobj=buf, custom_context=True, tag=ETCD_IMAGE, rm=True)
    return ETCD_IMAGE


class Scenario:
    """One Docker network and the containers on it; everything labelled and cleaned up."""

    def __init__(self) -> None:
        self.client = docker_client()
        self.run_id = uuid.uuid4().hex[:8]
        self.labels = {TEST_LABEL: "1", "buoy.e2e": self.run_id}
        self.network = self.client.networks.create(f"buoy-e2e-{self.run_id}", driver="bridge",
                                                   labels=self.labels)
        self.containers: list[Any] = []

    @property
    def network_name(self) -> str:
        return str(self.network.name)

    def run(self, role: str, image: str, *, env: dict[str, str] | None = None,
            command: list[str] | None = None, publish: int | None = None,
            entrypoint: list[str] | None = None) -> Any:
        ports = {f"{publish}/tcp": ("127.0.0.1", None)} if publish else {}
        container = self.client.containers.run(
            image, command, entrypoint=entrypoint, detach=True,
            name=f"buoy-e2e-{self.run_id}-{role}", environment=env or {}, labels=self.labels,
            network=self.network_name, ports=ports, stop_signal="SIGTERM")
        self.containers.append(container)
        return container

    def ip(self, container: Any) -> str:
        container.reload()
        return str(container.attrs["NetworkSettings"]["Networks"][self.network_name]["IPAddress"])

    @staticmethod
    def published(container: Any, port: int) -> int:
        container.reload()
        return int(container.attrs["NetworkSettings"]["Ports"][f"{port}/tcp"][0]["HostPort"])

    @staticmethod
    def instance_id(container: Any) -> str:
        container.reload()
        return str(container.attrs["Config"]["Hostname"]).lower()

    def logs(self) -> str:
        out = []
        for c in self.containers:
            try:
                text = c.logs(tail=60).decode(errors="replace")
            except docker.errors.APIError:
                continue
            out.append(f"--- {c.name}\n{text}")
        return "\n".join(out)

    def cleanup(self) -> None:
        for c in self.client.containers.list(all=True, filters={"label": f"buoy.e2e={self.run_id}"}):
            try:
                c.remove(force=True)
            except docker.errors.APIError:
                pass
        try:
            self.network.remove()
        except docker.errors.APIError:
            pass
        self.client.close()


def http_get(port: int, host: str, timeout: float = 5.0) -> tuple[int, str]:
    """One request on a fresh connection: (status, body)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", "/", headers={"Host": host})
        resp = conn.getresponse()
        return resp.status, resp.read().decode(errors="replace")
    finally:
        conn.close()


def try_get(port: int, host: str) -> str | None:
    """The body of a 200 answer, else None (for polling)."""
    try:
        status, body = http_get(port, host, timeout=2.0)
    except OSError:
        return None
    return body if status == 200 else None
