"""Certificates for the HTTPS frontend (pure, no I/O): parse and check a PEM bundle or a
`/certs/<vhost>` record, make the self-signed default, and the rows of what is served.

A bundle that does not parse, whose key does not match its certificate, or whose names do
not cover its virtual host raises CertError: it is logged and skipped and never reaches
HAProxy.
"""

from __future__ import annotations

import datetime
import json
import re
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from buoy.etcd.records import RecordError, check_hostname

SOURCES = ("dir", "etcd", "acme", "default")
PEM_BLOCK_RE = re.compile(r"-----BEGIN ([A-Z0-9 ]+)-----\r?\n.*?-----END \1-----", re.S)


class CertError(ValueError):
    """A certificate bundle that must not be served."""


@dataclass(frozen=True)
class CertificateRow:
    """One served certificate, for the status page and /healthz."""

    vhost: str
    source: str  # "dir", "etcd", "acme" or "default"
    not_after: float | None  # epoch seconds
    error: str | None


@dataclass(frozen=True)
class Bundle:
    """A checked certificate chain and its key, as HAProxy reads them (no blank line)."""

    vhost: str
    source: str
    pem: str  # chain then key
    not_before: float
    not_after: float
    serial: int

    @property
    def lifetime(self) -> float:
        return self.not_after - self.not_before

    def row(self) -> CertificateRow:
        return CertificateRow(self.vhost, self.source, self.not_after, None)


def check_vhost(name: str) -> str:
    """A virtual host name as a file name or key suffix may give it (`*.` allowed)."""
    text = name.strip().lower()
    try:
        if text.startswith("*."):
            return "*." + check_hostname("vhost", text[2:])
        return check_hostname("vhost", text)
    except RecordError as exc:
        raise CertError(str(exc)) from None


def parse_bundle(vhost: str, text: str, source: str) -> Bundle:
    """Chain + key in one PEM text → a checked Bundle for `vhost`."""
    vhost = check_vhost(vhost)
    pem, leaf = parse_pem(text, vhost)
    names = dns_names(leaf)
    if not covers(names, vhost):
        raise CertError(f"{vhost}: the certificate names {sorted(names)} do not cover it")
    return Bundle(vhost, source, pem, leaf.not_valid_before_utc.timestamp(),
                  leaf.not_valid_after_utc.timestamp(), leaf.serial_number)


def parse_pem(text: str, label: str) -> tuple[str, x509.Certificate]:
    """Chain + one matching key → (the PEM as HAProxy takes it, the leaf certificate)."""
    blocks = [m.group(0).replace("\r\n", "\n") for m in PEM_BLOCK_RE.finditer(text)]
    certs = [b for b in blocks if "CERTIFICATE-----" in b.splitlines()[0]]
    keys = [b for b in blocks if "PRIVATE KEY-----" in b.splitlines()[0]]
    if not certs:
        raise CertError(f"{label}: no certificate in the PEM")
    if len(keys) != 1:
        raise CertError(f"{label}: expected one private key in the PEM, found {len(keys)}")
    try:
        chain = [x509.load_pem_x509_certificate(b.encode()) for b in certs]
        key = serialization.load_pem_private_key(keys[0].encode(), password=None)
    except (ValueError, TypeError) as exc:
        raise CertError(f"{label}: does not parse: {exc}") from None
    leaf = chain[0]
    pub = serialization.PublicFormat.SubjectPublicKeyInfo
    if (key.public_key().public_bytes(serialization.Encoding.PEM, pub)
            != leaf.public_key().public_bytes(serialization.Encoding.PEM, pub)):
        raise CertError(f"{label}: the private key does not match the certificate")
    # no blank line: HAProxy's runtime API ends a payload at the first one
    pem = "\n".join(line for line in "\n".join(certs + keys).splitlines() if line.strip())
    return pem + "\n", leaf


def parse_record(vhost: str, value: str | bytes) -> Bundle:
    """A `/certs/<vhost>` value: JSON {"cert": chain PEM, "key": key PEM[, "source": "acme"]}
    or plain PEM (chain + key)."""
    text = value.decode(errors="replace") if isinstance(value, bytes) else value
    if not text.lstrip().startswith("{"):
        return parse_bundle(vhost, text, "etcd")
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise CertError(f"{vhost}: record is not JSON: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("cert"), str) \
            or not isinstance(data.get("key"), str):
        raise CertError(f'{vhost}: record must be {{"cert": PEM, "key": PEM}}')
    source = "acme" if data.get("source") == "acme" else "etcd"
    return parse_bundle(vhost, data["cert"] + "\n" + data["key"], source)


def record(chain_pem: str, key_pem: str, source: str = "etcd") -> str:
    """The JSON value of a `/certs/<vhost>` key."""
    out = {"cert": chain_pem, "key": key_pem}
    if source == "acme":
        out["source"] = "acme"
    return json.dumps(out, sort_keys=True)


def dns_names(cert: x509.Certificate) -> set[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        return {n.lower() for n in san.get_values_for_type(x509.DNSName)}
    except x509.ExtensionNotFound:
        cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        return {str(cn[0].value).lower()} if cn else set()


def covers(names: set[str], vhost: str) -> bool:
    """Whether a certificate for `names` is valid for `vhost` (one-label wildcards)."""
    if vhost in names:
        return True
    head, _, rest = vhost.partition(".")
    return bool(rest) and not head.startswith("*") and f"*.{rest}" in names


def renewal_due(bundle: Bundle, now: float, fraction: float = 1 / 3) -> bool:
    """Renew when less than `fraction` of the certificate's lifetime is left."""
    return bundle.not_after - now < fraction * max(bundle.lifetime, 1.0)


def new_key_pem(kind: str = "ec") -> str:
    """A new private key, PEM (PKCS8): EC P-256 for certificates, RSA 2048 for accounts."""
    key = (rsa.generate_private_key(public_exponent=65537, key_size=2048) if kind == "rsa"
           else ec.generate_private_key(ec.SECP256R1()))
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def self_signed(name: str = "buoy.invalid", days: int = 3650) -> str:
    """A self-signed certificate and key (PEM, no blank line): the HTTPS default."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
            .sign(key, hashes.SHA256()))
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    return cert.public_bytes(serialization.Encoding.PEM).decode() + key_pem
