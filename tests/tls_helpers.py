"""A throw-away certificate authority for tests: a CA, an etcd server certificate, client certificates.

Made with Debian's `openssl` command (EC P-256 keys: fast to generate). With
`--client-cert-auth` and auth enabled, etcd takes a client certificate's common
name as the user name when a request carries no token, so each client
certificate is named after the etcd user it stands for.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

DAYS = "2"


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=30)


def _key(path: Path) -> None:
    _openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
             "-out", str(path), cwd=path.parent)


@dataclass(frozen=True)
class ClientCert:
    cert: str
    key: str


@dataclass(frozen=True)
class Pki:
    """Files of one test CA; `client(name)` issues a client certificate with CN=name."""

    dir: Path
    ca: str
    ca_key: str
    server_cert: str
    server_key: str

    def _sign(self, name: str, csr: Path, ext: str) -> Path:
        ext_file = self.dir / f"{name}.ext"
        ext_file.write_text(ext)
        cert = self.dir / f"{name}.crt"
        _openssl("x509", "-req", "-in", str(csr), "-CA", self.ca, "-CAkey", self.ca_key,
                 "-CAcreateserial", "-days", DAYS, "-sha256", "-extfile", str(ext_file),
                 "-out", str(cert), cwd=self.dir)
        return cert

    def client(self, name: str) -> ClientCert:
        key = self.dir / f"{name}.key"
        cert = self.dir / f"{name}.crt"
        if not cert.exists():
            _key(key)
            csr = self.dir / f"{name}.csr"
            _openssl("req", "-new", "-key", str(key), "-subj", f"/CN={name}", "-out", str(csr),
                     cwd=self.dir)
            self._sign(name, csr, "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\n"
                                  "extendedKeyUsage=clientAuth\n")
        return ClientCert(str(cert), str(key))

    def etcd_args(self, client_cert_auth: bool = True) -> list[str]:
        """etcd flags for TLS on the client port (the peer port stays on loopback http)."""
        args = ["--cert-file", self.server_cert, "--key-file", self.server_key,
                "--trusted-ca-file", self.ca]
        return [*args, "--client-cert-auth"] if client_cert_auth else args


def make_pki(directory: Path, ca_name: str = "buoy-test-ca") -> Pki:
    """A new CA and a server certificate for 127.0.0.1/localhost under `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_key, ca = directory / "ca.key", directory / "ca.crt"
    _key(ca_key)
    _openssl("req", "-x509", "-new", "-key", str(ca_key), "-subj", f"/CN={ca_name}",
             "-days", DAYS, "-sha256", "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign", "-out", str(ca), cwd=directory)
    pki = Pki(directory, str(ca), str(ca_key), str(directory / "server.crt"),
              str(directory / "server.key"))
    _key(Path(pki.server_key))
    csr = directory / "server.csr"
    _openssl("req", "-new", "-key", pki.server_key, "-subj", "/CN=etcd", "-out", str(csr),
             cwd=directory)
    pki._sign("server", csr, "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\n"
                             "extendedKeyUsage=serverAuth,clientAuth\n"
                             "subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    return pki
