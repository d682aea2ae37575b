"""HTTPS test helpers: a local CA that signs certificates for virtual hosts, TLS requests
with SNI, and Debian's pebble (an ACME test CA) on free loopback ports.

pebble's HTTP-01 validation connects to `<name>:<httpPort>`: pebble-challtestsrv runs as
its DNS server only and answers 127.0.0.1 for every name, and `httpPort` is listen's HTTP
bind, so validation really goes through HAProxy to listen's responder.
"""

from __future__ import annotations

import datetime
import http.client
import ipaddress
import json
import os
import socket
import ssl
import subprocess
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from etcd_server import free_port, wait_for


def _pem_key(key: ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


class LocalCA:
    """A CA in memory; `issue` signs a leaf for some names."""

    def __init__(self, name: str = "buoy test CA") -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = datetime.datetime.now(datetime.UTC)
        self.cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
                     .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
                     .not_valid_before(now - datetime.timedelta(hours=1))
                     .not_valid_after(now + datetime.timedelta(days=30))
                     .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                     .sign(self.key, hashes.SHA256()))
        self.pem = self.cert.public_bytes(serialization.Encoding.PEM).decode()

    def write(self, path: Path) -> Path:
        path.write_text(self.pem)
        return path

    def issue(self, *names: str, days: float = 10, age: float = 0.0,
              key_pem: str | None = None, ips: tuple[str, ...] = ()) -> tuple[str, str]:
        """(chain PEM, key PEM) for `names`; `age` days already passed of its lifetime."""
        key = (serialization.load_pem_private_key(key_pem.encode(), None) if key_pem
               else ec.generate_private_key(ec.SECP256R1()))
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        now = datetime.datetime.now(datetime.UTC)
        start = now - datetime.timedelta(days=age, minutes=5)
        cert = (x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
                .issuer_name(self.cert.subject).public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(start).not_valid_after(start + datetime.timedelta(days=days))
                .add_extension(x509.SubjectAlternativeName(
                    [x509.DNSName(n) for n in names]
                    + [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]), critical=False)
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                               critical=False)
                .sign(self.key, hashes.SHA256()))
        return cert.public_bytes(serialization.Encoding.PEM).decode() + self.pem, _pem_key(key)

    def bundle(self, *names: str, **kw: float) -> str:
        """Chain and key in one PEM, with a blank line between (HAProxy's payload trap)."""
        chain, key = self.issue(*names, **kw)
        return chain + "\n" + key

    def record(self, *names: str, **kw: float) -> str:
        chain, key = self.issue(*names, **kw)
        return json.dumps({"cert": chain, "key": key})


def peer_cert(port: int, sni: str) -> x509.Certificate:
    """The certificate HAProxy presents for `sni` (not verified)."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
            ctx.wrap_socket(raw, server_hostname=sni) as tls:
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)


def served_names(port: int, sni: str) -> set[str]:
    try:
        cert = peer_cert(port, sni)
    except OSError:
        return set()
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return set(san.get_values_for_type(x509.DNSName))


def served_serial(port: int, sni: str) -> int | None:
    try:
        return peer_cert(port, sni).serial_number
    except OSError:
        return None


def https_get(port: int, host: str, cafile: str, path: str = "/",
              ) -> tuple[int, str, dict[str, str]]:
    """A verified HTTPS request for `host` (SNI and Host), on its own connection."""
    ctx = ssl.create_default_context(cafile=cafile)
    conn = http.client.HTTPSConnection(host, port, timeout=5, context=ctx)
    conn.sock = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=5),
                                server_hostname=host)
    try:
        conn.request("GET", path, headers={"Host": host})
        resp = conn.getresponse()
        return resp.status, resp.read().decode(), {k.lower(): v for k, v in resp.getheaders()}
    finally:
        conn.close()


@dataclass
class Pebble:
    """pebble and its DNS on free ports; `directory` is the ACME URL, `ca` trusts its API."""

    directory: str
    ca: str
    mgmt_port: int
    procs: list[subprocess.Popen[bytes]]
    workdir: Path

    def root_pem(self) -> str:
        """The root that signs what pebble issues (made fresh at each start)."""
        ctx = ssl.create_default_context(cafile=self.ca)
        conn = http.client.HTTPSConnection("127.0.0.1", self.mgmt_port, timeout=5, context=ctx)
        try:
            conn.request("GET", "/roots/0")
            return conn.getresponse().read().decode()
        finally:
            conn.close()

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
        for p in self.procs:
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)


def _port_open(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), 0.3).close()
        return True
    except OSError:
        return False


def start_pebble(workdir: Path, http_port: int) -> Pebble:
    """pebble validating HTTP-01 on `http_port` of 127.0.0.1 (every name resolves there)."""
    workdir.mkdir(parents=True, exist_ok=True)
    ca = LocalCA("pebble API test CA")
    chain, key = ca.issue("localhost", ips=("127.0.0.1",), days=2)
    (workdir / "api.pem").write_text(chain)
    (workdir / "api.key").write_text(key)
    ca_file = ca.write(workdir / "api-ca.pem")
    acme_port, mgmt_port, tls_port, dns_port, dns_mgmt = (free_port() for _ in range(5))
    config = {"pebble": {
        "listenAddress": f"127.0.0.1:{acme_port}",
        "managementListenAddress": f"127.0.0.1:{mgmt_port}",
        "certificate": str(workdir / "api.pem"), "privateKey": str(workdir / "api.key"),
        "httpPort": http_port, "tlsPort": tls_port, "ocspResponderURL": "",
        "externalAccountBindingRequired": False}}
    (workdir / "pebble.json").write_text(json.dumps(config))
    env = {k: v for k, v in os.environ.items() if k != "PEBBLE_VA_ALWAYS_VALID"}
    env.update(PEBBLE_VA_NOSLEEP="1", PEBBLE_WFE_NONCEREJECT="0")
    with open(workdir / "dns.log", "wb") as dns_log, open(workdir / "pebble.log", "wb") as log:
        procs = [
            subprocess.Popen(["pebble-challtestsrv", "-dns01", f"127.0.0.1:{dns_port}",
                              "-http01", "", "-https01", "", "-tlsalpn01", "",
                              "-management", f"127.0.0.1:{dns_mgmt}",
                              "-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""],
                             stdout=dns_log, stderr=subprocess.STDOUT),
            subprocess.Popen(["pebble", "-config", str(workdir / "pebble.json"),
                              "-dnsserver", f"127.0.0.1:{dns_port}", "-strict"],
                             stdout=log, stderr=subprocess.STDOUT, env=env),
        ]
    pebble = Pebble(f"https://127.0.0.1:{acme_port}/dir", str(ca_file), mgmt_port, procs, workdir)

    def up() -> bool:
        dead = [p.args[0] for p in procs if p.poll() is not None]
        if dead:
            logs = {n: (workdir / n).read_text()[-1500:] for n in ("dns.log", "pebble.log")}
            raise AssertionError(f"{dead} exited: {logs}")
        return all(_port_open(p) for p in (dns_mgmt, acme_port, mgmt_port))

    try:  # pebble makes its root and intermediate keys first: slow on a busy machine
        wait_for(up, timeout=60, interval=0.1, what="pebble")
    except BaseException:
        pebble.stop()
        raise
    return pebble
