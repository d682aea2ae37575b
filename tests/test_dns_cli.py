"""`buoy dns` as a process: settings errors, serving, and a clean stop on SIGTERM."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys

import dns.message
import dns.query
import dns.rcode
import pytest
from etcd_server import EtcdServer, free_port, wait_for

from buoy.etcd.dns_records import SkyDNSRecord
from buoy.etcd.keys import KeyLayout
from buoy.etcd.store import EtcdStore

BUOY = [sys.executable, "-c", "from buoy.cli import main; main()"]


def test_bad_settings_stop_at_start_naming_the_setting() -> None:
    for args, setting in ((["--listen", "nowhere"], "BUOY_DNS_LISTEN"),
                          (["--zone", "bad zone"], "BUOY_DNS_ZONE"),
                          (["--extra-zone", "ok.test,no pe"], "BUOY_DNS_EXTRA_ZONES")):
        proc = subprocess.run([*BUOY, "dns", *args], capture_output=True, text=True, timeout=30)
        assert proc.returncode == 2, proc.stderr
        assert setting in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_process_answers_and_stops_on_sigterm(etcd: EtcdServer, store: EtcdStore,
                                              keys: KeyLayout, prefix: str) -> None:
    store.put(keys.skydns_key("web.buoy.internal."), SkyDNSRecord(host="10.9.0.1").to_json())
    port = free_port()
    proc = subprocess.Popen(
        [*BUOY, "dns", "--listen", f"127.0.0.1:{port}", "--prefix", prefix,
         "--etcd-endpoints", etcd.endpoint],
        env={"BUOY_DNS_EXTRA_ZONES": "example.,skydns_zonea.test.", "PATH": "/usr/bin:/bin"},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        def answered() -> bool:
            query = dns.message.make_query("web.buoy.internal.", "A")
            try:
                reply = dns.query.udp(query, "127.0.0.1", port=port, timeout=0.5)
            except (dns.exception.Timeout, OSError):
                return False
            return reply.rcode() == dns.rcode.NOERROR and bool(reply.answer)

        wait_for(answered, timeout=20, what="buoy dns answering")
        reply = dns.query.tcp(dns.message.make_query("x.example.", "A"), "127.0.0.1", port=port,
                              timeout=3)
        assert reply.rcode() == dns.rcode.NXDOMAIN  # example. is served (from the env var)
        # A zone with an underscore is served too (CoreDNS's own tests use such zones).
        under = dns.query.udp(dns.message.make_query("x.skydns_zonea.test.", "A"), "127.0.0.1",
                              port=port, timeout=3)
        assert under.rcode() == dns.rcode.NXDOMAIN
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize("kind", [socket.SOCK_DGRAM, socket.SOCK_STREAM], ids=["udp", "tcp"])
def test_listen_address_in_use_is_one_line_and_exit_2(etcd: EtcdServer, prefix: str,
                                                       kind: int) -> None:
    with socket.socket(socket.AF_INET, kind) as taken:
        taken.bind(("127.0.0.1", 0))
        if kind == socket.SOCK_STREAM:
            taken.listen(1)
        port = taken.getsockname()[1]
        proc = subprocess.run(
            [*BUOY, "dns", "--listen", f"127.0.0.1:{port}", "--prefix", prefix,
             "--etcd-endpoints", etcd.endpoint], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "BUOY_DNS_LISTEN" in lines[0] and f"127.0.0.1:{port}" in lines[0]
