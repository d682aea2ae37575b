"""Register processes to start in tests of `buoy register` against the local Docker engine
(the `dclient` and `containers` fixtures are in conftest.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

from docker_helpers import RegisterProcess
from etcd_server import EtcdServer

StartRegister = Callable[..., RegisterProcess]


def register_starter(tmp_path: Path, etcd: EtcdServer, prefix: str,
                     host_ip: str) -> Iterator[StartRegister]:
    """The body of a `start_register` fixture: register processes reporting `host_ip`,
    each started once it has listed the engine's containers, killed at teardown."""
    procs: list[RegisterProcess] = []

    def start(*args: str, host_id: str = "host-a", log_name: str | None = None,
              env: dict[str, str] | None = None) -> RegisterProcess:
        log = tmp_path / (log_name or f"register-{len(procs)}.log")
        proc = RegisterProcess(log, etcd.endpoint, prefix, "--host-id", host_id,
                               "--host-ip", host_ip, *args, env=env).start()
        procs.append(proc)
        proc.wait_log("docker listed containers")
        return proc

    yield start
    for p in procs:
        p.kill()
