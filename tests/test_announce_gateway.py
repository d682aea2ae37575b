"""announce over etcd's JSON gateway against real etcd: lease loss, failover, TLS with client
certificates, user/password (and token expiry), CHECK logging, and what it imports."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from agent_process import AgentProcess
from etcd_server import EtcdServer, free_port, wait_for
from tcp_proxy import CuttableProxy
from test_announce import PATH, announce, key_for
from test_security import PASSWORDS, ROOT_PASSWORD, SecureEtcd, setup_roles, with_users
from tls_helpers import ClientCert, make_pki

from buoy.etcd.store import EtcdStore

FORBIDDEN = ("etcd3", "grpc", "docker", "jinja2", "dns", "prometheus_client", "tenacity")


def test_lost_lease_is_granted_again_and_the_record_put_again(
        etcd: EtcdServer, store: EtcdStore, prefix: str, tmp_path: Path) -> None:
    agent = announce(etcd, prefix, tmp_path)  # TTL 3 s, interval 1 s
    key = key_for(prefix)
    try:
        first = wait_for(lambda: store.get(key), 10, what="announce record")
        store.revoke(first.lease)  # what etcd does when it lost or expired the lease
        again = wait_for(lambda: store.get(key), 10, what="record back under a new lease")
        assert again.lease not in (0, first.lease)
        assert json.loads(again.value)["ID"] == "web1"
        wait_for(lambda: "lost" in agent.log(), 5, what="the loss logged")
    finally:
        agent.stop()


def test_fails_over_to_the_next_endpoint_and_keeps_the_lease(
        etcd: EtcdServer, store: EtcdStore, prefix: str, tmp_path: Path) -> None:
    proxy = CuttableProxy(etcd.client_port)
    dead = f"http://127.0.0.1:{free_port()}"
    agent = announce(etcd, prefix, tmp_path,
                     BUOY_ETCD_ENDPOINTS=f"{dead},{proxy.endpoint},{etcd.endpoint}")
    key = key_for(prefix)
    try:
        kv = wait_for(lambda: store.get(key), 10, what="announced past a dead first endpoint")
        proxy.cut()  # the endpoint in use goes away
        threading.Event().wait(3 + 1)  # longer than the TTL: only refreshes keep it
        after = store.get(key)
        assert after is not None and after.lease == kv.lease
        assert "failover" in agent.log()
    finally:
        agent.stop()
        proxy.close()


def test_check_changes_and_withdrawal_are_logged_with_the_reason(
        etcd: EtcdServer, store: EtcdStore, prefix: str, tmp_path: Path) -> None:
    port = free_port()
    agent = announce(etcd, prefix, tmp_path, PORT=str(port), CHECK="/healthz",
                     ANNOUNCE_CHECK_INTERVAL="0.2", ANNOUNCE_CHECK_FAILURES="2")
    key = key_for(prefix)
    try:
        wait_for(lambda: "check /healthz failed: error=ConnectionRefusedError" in agent.log(), 10,
                 what="the connect error logged")
        assert store.get(key) is None
        import http.server

        from test_announce import _Health

        handler: Any = type("Health", (_Health,), {"healthy": True})
        server = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            wait_for(lambda: store.get(key), 10, what="announced once healthy")
            assert "check /healthz passed: status=200" in agent.log()
            handler.healthy = False
            wait_for(lambda: store.get(key) is None, 10, what="withdrawn")
            log = agent.log()
            assert "check /healthz failed: status=503" in log
            assert "failed 2 times in a row (last: status=503); withdrawing" in log
            assert log.count("check /healthz failed: status=503") == 1  # changes only
        finally:
            server.shutdown()
            server.server_close()
    finally:
        agent.stop()


def test_a_path_too_long_for_dns_is_refused_at_start(etcd: EtcdServer, prefix: str) -> None:
    name = ".".join(["a" * 60] * 4)  # a valid NAME; with the ID and zone past 253 characters
    env = {**os.environ, "ANNOUNCE_PATH": f"/internal/app1/dev/web/{name}", "PORT": "80",
           "TYPE": "HTTP", "ANNOUNCE_ID": "web1", "BUOY_ETCD_ENDPOINTS": etcd.endpoint,
           "BUOY_PREFIX": prefix}
    res = subprocess.run([sys.executable, "-m", "buoy", "announce"], env=env,
                         capture_output=True, text=True, timeout=30)
    assert res.returncode == 2
    assert res.stderr.count("\n") == 1 and "ANNOUNCE_PATH" in res.stderr and "253" in res.stderr


PROBE = """
import os, runpy, signal, sys, threading
def report():
    bad = [m for m in {forbidden!r} if m in sys.modules or any(
        k.startswith(m + ".") for k in sys.modules)]
    print("FORBIDDEN", bad, file=sys.stderr, flush=True)
    os.kill(os.getpid(), signal.SIGTERM)
threading.Timer(1.5, report).start()
args = {module!r}.split()
sys.argv = [args[0] + "/__main__.py", *args[1:]]
runpy.run_module(args[0], run_name="__main__", alter_sys=True)
"""


def test_python_m_announce_runs_without_click_and_withdraws(
        etcd: EtcdServer, store: EtcdStore, prefix: str, tmp_path: Path) -> None:
    """What supervisord runs in the images: the environment alone, click never loaded."""
    agent = AgentProcess([], {"ANNOUNCE_PATH": PATH, "PORT": "80", "TYPE": "HTTP",
                              "ANNOUNCE_ID": "web1", "BUOY_ETCD_ENDPOINTS": etcd.endpoint,
                              "BUOY_PREFIX": prefix, "ANNOUNCE_DRAIN": "0.5"}, tmp_path)
    agent.args = [sys.executable, "-m", "announce"]
    agent.start()
    key = key_for(prefix)
    try:
        kv = wait_for(lambda: store.get(key), 10, what="announce record")
        assert json.loads(kv.value)["PORT"] == 80 and kv.lease != 0
        assert agent.proc is not None
        maps = Path(f"/proc/{agent.proc.pid}/maps").read_text()
        assert "libssl" not in maps  # http endpoints: ssl is never imported
        agent.signal(signal.SIGTERM)
        assert agent.wait() == 0
        assert store.get(key) is None
        assert "draining for 0.5s" in agent.log()
    finally:
        agent.stop()


@pytest.mark.parametrize("module", ["buoy announce", "announce"])
def test_announce_imports_nothing_it_does_not_use(etcd: EtcdServer, prefix: str,
                                                  module: str) -> None:
    env = {**os.environ, "ANNOUNCE_PATH": PATH, "PORT": "80", "TYPE": "HTTP", "ANNOUNCE_ID": "imp",
           "BUOY_ETCD_ENDPOINTS": etcd.endpoint, "BUOY_PREFIX": prefix}
    forbidden = FORBIDDEN + (("click",) if module == "announce" else ())
    res = subprocess.run([sys.executable, "-c", PROBE.format(forbidden=forbidden, module=module)],
                         env=env,
                         capture_output=True, text=True, timeout=30)
    assert res.returncode == 0, res.stderr
    assert "FORBIDDEN []" in res.stderr, res.stderr
    assert "announced key=" in res.stderr


# TLS and auth ----------------------------------------------------------------------------------

def cert_without_cn(pki_dir: Path, name: str) -> ClientCert:
    """A client certificate with no common name (only O=): the gateway accepts it with auth."""
    key, csr, cert, ext = (pki_dir / f"{name}.{s}" for s in ("key", "csr", "crt", "ext"))

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=pki_dir, check=True, capture_output=True, timeout=30)

    run("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", str(key))
    run("req", "-new", "-key", str(key), "-subj", f"/O={name}", "-out", str(csr))
    ext.write_text("basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\n"
                   "extendedKeyUsage=clientAuth\n")
    run("x509", "-req", "-in", str(csr), "-CA", str(pki_dir / "ca.crt"), "-CAkey",
        str(pki_dir / "ca.key"), "-CAcreateserial", "-days", "2", "-sha256", "-extfile", str(ext),
        "-out", str(cert))
    return ClientCert(str(cert), str(key))


def tls_etcd(directory: Path, *extra: str) -> SecureEtcd:
    pki = make_pki(directory / "pki")
    server = EtcdServer(directory / "data", scheme="https",
                        extra_args=[*pki.etcd_args(), *extra]).start()
    secure = SecureEtcd(server, pki, pki.client("client"))
    root = secure.store()
    wait_for(lambda: _answers(root), 20, what="etcd over TLS")
    root.close()
    return secure


def _ok(fn: Callable[[], Any]) -> Any:
    """fn's result, or None when it raised (e.g. an expired token): for polling."""
    try:
        return fn()
    except Exception:  # noqa: BLE001 - polled again
        return None


def _answers(store: EtcdStore) -> bool:
    try:
        store.revision()
        return True
    except Exception:  # noqa: BLE001 - not up yet
        return False


@pytest.fixture(scope="module")
def tls_only(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureEtcd]:
    """https with --client-cert-auth, auth not enabled."""
    s = tls_etcd(tmp_path_factory.mktemp("tls-only"))
    yield s
    s.server.stop()


@pytest.fixture(scope="module")
def tls_auth(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureEtcd]:
    """https with client certificates and auth enabled; tokens last 2 s."""
    s = tls_etcd(tmp_path_factory.mktemp("tls-auth"), "--auth-token-ttl", "2")
    done = setup_roles(s, "/module", "--enable-auth", user=None, BUOY_ROOT_PASSWORD=ROOT_PASSWORD)
    assert done.returncode == 0 and "auth: enabled" in done.stdout, done.stdout + done.stderr
    yield s
    s.server.stop()


def _env(secure: SecureEtcd, prefix: str, cert: ClientCert, **extra: str) -> dict[str, str]:
    return {"ANNOUNCE_PATH": PATH, "PORT": "80", "TYPE": "HTTP", "ANNOUNCE_ID": "web1",
            "ANNOUNCE_TTL": "3", "ANNOUNCE_INTERVAL": "1", "BUOY_PREFIX": prefix,
            "BUOY_ETCD_ENDPOINTS": secure.server.endpoint, "BUOY_ETCD_CA": secure.pki.ca,
            "BUOY_ETCD_CERT": cert.cert, "BUOY_ETCD_KEY": cert.key, "BUOY_ETCD_TIMEOUT": "3",
            **extra}


def test_tls_with_a_client_certificate(tls_only: SecureEtcd, prefix: str, tmp_path: Path) -> None:
    agent = AgentProcess(["announce"], _env(tls_only, prefix, tls_only.client), tmp_path).start()
    store = tls_only.store()
    key = key_for(prefix)
    try:
        wait_for(lambda: store.get(key), 15, what="announced over TLS")
        agent.signal(signal.SIGTERM)
        assert agent.wait() == 0
        assert store.get(key) is None
        assert "gRPC" not in agent.log()  # the gateway did it all
    finally:
        agent.stop()
        store.close()


def test_no_client_certificate_is_refused_by_etcd(tls_only: SecureEtcd, prefix: str,
                                                  tmp_path: Path) -> None:
    env = _env(tls_only, prefix, tls_only.client)
    env.pop("BUOY_ETCD_CERT")
    env.pop("BUOY_ETCD_KEY")
    agent = AgentProcess(["announce"], env, tmp_path).start()
    try:
        wait_for(lambda: "grant failed" in agent.log(), 15, what="a logged, retried failure")
        assert agent.proc is not None and agent.proc.poll() is None
    finally:
        agent.stop()


def test_user_password_over_tls_survives_token_expiry_and_lease_loss(
        tls_auth: SecureEtcd, prefix: str, tmp_path: Path) -> None:
    users = with_users(tls_auth, prefix)
    cert = cert_without_cn(Path(tls_auth.pki.dir), f"nocn-{prefix.strip('/')}")
    env = _env(tls_auth, prefix, cert, BUOY_ETCD_USER=users["announce"],
               BUOY_ETCD_PASSWORD=PASSWORDS["announce"])
    agent = AgentProcess(["announce"], env, tmp_path).start()
    root = tls_auth.root()
    key = key_for(prefix)
    try:
        first = wait_for(lambda: root.get(key), 15, what="announced with user/password")
        threading.Event().wait(3)  # the 2 s token has expired
        # The put that follows needs a valid token again (the root store re-authenticates too).

        def revoke() -> bool:
            root.revoke(first.lease)
            return True

        wait_for(lambda: _ok(revoke), 10, what="lease revoked")
        again = wait_for(lambda: _ok(lambda: root.get(key)), 15, what="put with a fresh token")
        assert again.lease != first.lease
        agent.signal(signal.SIGTERM)
        assert agent.wait() == 0
        assert wait_for(lambda: _ok(lambda: root.get(key) is None), 10, what="withdrawn")
        assert "gRPC" not in agent.log()
    finally:
        agent.stop()
        root.close()


def test_wrong_password_exits_2_in_one_line(tls_auth: SecureEtcd, prefix: str) -> None:
    users = with_users(tls_auth, prefix)
    cert = cert_without_cn(Path(tls_auth.pki.dir), f"nocn2-{prefix.strip('/')}")
    env = {**os.environ, **_env(tls_auth, prefix, cert, BUOY_ETCD_USER=users["announce"],
                                BUOY_ETCD_PASSWORD="wrong")}
    res = subprocess.run([sys.executable, "-m", "buoy", "announce"], env=env,
                         capture_output=True, text=True, timeout=30)
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "BUOY_ETCD_PASSWORD" in lines[0], res.stderr


def test_a_certificate_with_a_common_name_falls_back_to_grpc_once(
        tls_auth: SecureEtcd, prefix: str, tmp_path: Path) -> None:
    users = with_users(tls_auth, prefix)
    cert = tls_auth.pki.client(users["announce"])  # CN = the user: gRPC-style identity
    agent = AgentProcess(["announce"], _env(tls_auth, prefix, cert), tmp_path).start()
    root = tls_auth.root()
    key = key_for(prefix)
    try:
        wait_for(lambda: root.get(key), 15, what="announced through gRPC")
        assert agent.log().count("using gRPC instead") == 1
        agent.signal(signal.SIGTERM)
        assert agent.wait() == 0
        assert root.get(key) is None
    finally:
        agent.stop()
        root.close()
