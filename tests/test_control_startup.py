"""Start-up errors: a taken metrics port stops every agent at once, in one line, exit 2.

(`buoy up` and its taken ports are in test_up.py; listen's HAProxy bind and dns's
--listen port are their owners' to test.)
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from etcd_server import free_port

DEAD = f"http://127.0.0.1:{free_port()}"  # nothing listens there: the agents would retry


def agent_args(agent: str, tmp_path: Path) -> list[str]:
    return {
        "announce": ["announce", "--path", "/internal/app1/dev/web", "--port", "80", "--type",
                     "HTTP", "--id", "web1"],
        "register": ["register", "--host-id", "h1", "--host-ip", "127.0.0.1"],
        "listen": ["listen", "--listen-path", "/services/internal", "--state-dir",
                   str(tmp_path / "listen"), "--http-bind", f"127.0.0.1:{free_port()}"],
        "dns": ["dns", "--listen", f"127.0.0.1:{free_port()}"],
    }[agent]


@pytest.mark.parametrize("agent", ["announce", "register", "listen", "dns"])
def test_taken_metrics_port_is_one_line_and_exit_2(agent: str, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BUOY_", "ANNOUNCE_"))}
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        done = subprocess.run([sys.executable, "-m", "buoy", *agent_args(agent, tmp_path),
                               "--etcd-endpoints", DEAD, "--metrics-port", str(port)],
                              env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert done.stderr.splitlines() == [
        f"buoy: error: BUOY_METRICS_PORT: cannot listen on 127.0.0.1:{port}: "
        f"Address already in use"], done.stderr
