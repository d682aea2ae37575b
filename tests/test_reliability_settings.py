"""Invalid settings for every agent: exit code 2 and one line that names the setting."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from etcd_server import free_port

DEAD = f"http://127.0.0.1:{free_port()}"  # nothing listens: a setting that slips through hangs
ANNOUNCE = ["announce", "--path", "/internal/app1/dev/web", "--port", "80", "--type", "HTTP",
            "--id", "web1"]
LISTEN = ["listen", "--listen-path", "/services/internal/app1/dev", "--state-dir", "/tmp/x"]
REGISTER = ["register", "--host-id", "h1", "--host-ip", "127.0.0.1"]

CASES = [
    (ANNOUNCE + ["--port", "70000"], "PORT"),
    (ANNOUNCE + ["--type", "UDP"], "TYPE"),
    (ANNOUNCE + ["--path", "/internal/app1/dev/web\nserver x 6.6.6.6:80"], "ANNOUNCE_PATH"),
    (ANNOUNCE + ["--check", "/health #x"], "CHECK"),
    (ANNOUNCE + ["--id", "web 1"], "ID"),
    (REGISTER + ["--ttl", "1"], "BUOY_REGISTER_TTL"),
    (REGISTER + ["--host-ip", "10.0.0.300"], "BUOY_HOST_IP"),
    (REGISTER + ["--internal"], "BUOY_NETWORK"),
    (REGISTER + ["--zone", "bad zone."], "BUOY_DNS_ZONE"),
    (REGISTER + ["--host-id", "h1\nx"], "BUOY_HOST_ID"),
    (REGISTER + ["--resync", "-1"], "BUOY_REGISTER_RESYNC"),
    (LISTEN + ["--listen-path", "/services/Internal/app1"], "LISTEN_PATH"),
    (LISTEN + ["--http-bind", "nowhere"], "BUOY_HTTP_BIND"),
    (LISTEN + ["--tcp-bind", "127.0.0.1 # x"], "BUOY_TCP_BIND"),
    (LISTEN + ["--vhost-suffix", "example com"], "BUOY_VHOST_SUFFIX"),
    (LISTEN + ["--template", "/nonexistent/haproxy.j2"], "BUOY_TEMPLATE"),
    (LISTEN + ["--min-quiet", "0"], "BUOY_MIN_QUIET"),
    (LISTEN + ["--dns-ttl", "1"], "BUOY_DNS_TTL"),
    (LISTEN + ["--advertise-ip", "1.2.3.4\n"], "BUOY_ADVERTISE_IP"),
    (["dns", "--listen", "127.0.0.1"], "BUOY_DNS_LISTEN"),
    (["dns", "--lease-poll", "0"], "BUOY_DNS_LEASE_POLL"),
    (["dns", "--cache-size", "many"], "BUOY_DNS_CACHE_SIZE"),
    (["dns", "--extra-zone", "ok.test,bad zone"], "BUOY_DNS_EXTRA_ZONES"),
    (["dns", "--etcd-endpoints", "ftp://127.0.0.1:2379"], "BUOY_ETCD_ENDPOINTS"),
    (LISTEN + ["--etcd-timeout", "-2"], "BUOY_ETCD_TIMEOUT"),
    (ANNOUNCE + ["--prefix", "bad prefix"], "BUOY_PREFIX"),
]


@pytest.mark.parametrize(("args", "setting"), CASES, ids=[f"{a[0]}-{s}" for a, s in CASES])
def test_invalid_setting_exits_2_naming_it(args: list[str], setting: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BUOY_", "ANNOUNCE_"))}
    proc = subprocess.run([sys.executable, "-m", "buoy", *args, "--etcd-endpoints", DEAD]
                          if "--etcd-endpoints" not in args else [sys.executable, "-m", "buoy", *args],
                          env=env, capture_output=True, text=True, timeout=30)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1 and setting in lines[0], proc.stderr
    assert "6.6.6.6" not in proc.stdout
