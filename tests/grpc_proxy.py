"""`etcd grpc-proxy start` (part of Debian's etcd binary) in front of an etcd, on free ports."""

from __future__ import annotations

import re
import subprocess
import urllib.request
from pathlib import Path

from etcd_server import etcd_binary, free_port, wait_for


def metric(base: str, name: str) -> float:
    """One unlabelled value from a /metrics page (etcd's or the proxy's)."""
    with urllib.request.urlopen(f"{base}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    m = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    if m is None:
        raise KeyError(name)
    return float(m.group(1))


class GrpcProxy:
    """One grpc-proxy forwarding to `upstream` (host:port list); gRPC only, no JSON gateway."""

    def __init__(self, work: Path, upstream: str) -> None:
        self.port, self.metrics_port = free_port(), free_port()
        self.work = work
        self.upstream = upstream
        self.log_path = work / f"grpc-proxy-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def metrics(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}"

    def start(self) -> GrpcProxy:
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child process
        self.proc = subprocess.Popen(
            [etcd_binary(), "grpc-proxy", "start", "--endpoints", self.upstream,
             "--listen-addr", self.target, "--metrics-addr", self.metrics,
             "--data-dir", str(self.work / f"grpc-proxy-{self.port}")],
            stdout=log, stderr=log)
        log.close()

        def up() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"grpc-proxy exited: {self.log_path.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{self.metrics}/metrics", timeout=1):
                    return True
            except OSError:
                return False

        wait_for(up, 20, what=f"grpc-proxy on port {self.port}")
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
