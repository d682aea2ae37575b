"""The key layout: the one place that builds and parses etcd keys (DESIGN.md)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from buoy.etcd.records import AnnouncePath, RecordError, check_hostname, check_label

PREFIX_RE = re.compile(r"^(/[A-Za-z0-9._-]+)*$")
ANNOUNCE = "announce"
SERVICES = "services"
SKYDNS = "skydns"
STATUS = "status"  # register's verdict on an announce it refuses (docs/architecture.md)
CERTS = "certs"  # HTTPS certificates by virtual host, served by every listen
ACME = "acme"  # listen's ACME state: the issuer lock, the account, HTTP-01 challenge answers
TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]{1,128}$")


class KeyError_(ValueError):
    """A key that is not in buoy's layout."""


@dataclass(frozen=True)
class KeyLayout:
    """Builds and parses keys under an optional global prefix (`--prefix`)."""

    prefix: str = ""

    def __post_init__(self) -> None:
        if not PREFIX_RE.fullmatch(self.prefix):
            raise RecordError(
                "BUOY_PREFIX", "must be empty or /segment[/segment...] of [A-Za-z0-9._-]",
                self.prefix)

    # roots -----------------------------------------------------------------
    def root(self, kind: str) -> str:
        """`<prefix>/<kind>/`: the prefix to read or watch everything of one kind."""
        return f"{self.prefix}/{kind}/"

    @property
    def announce_root(self) -> str:
        return self.root(ANNOUNCE)

    @property
    def services_root(self) -> str:
        return self.root(SERVICES)

    @property
    def skydns_root(self) -> str:
        return self.root(SKYDNS)

    @property
    def status_root(self) -> str:
        return self.root(STATUS)

    @property
    def certs_root(self) -> str:
        return self.root(CERTS)

    @property
    def acme_root(self) -> str:
        return self.root(ACME)

    # HTTPS certificates and ACME -------------------------------------------------------
    def cert_key(self, vhost: str) -> str:
        """`/certs/<vhost>`; a wildcard host keeps its `*.`."""
        name = vhost.strip().lower()
        bare = name[2:] if name.startswith("*.") else name
        check_hostname("vhost", bare)
        return self.certs_root + name

    def parse_cert_key(self, key: str) -> str:
        """The virtual host of a `/certs/<vhost>` key."""
        root = self.certs_root
        if not key.startswith(root):
            raise KeyError_(f"key {key!r} is not under {root}")
        name = key[len(root):]
        try:
            check_hostname("vhost", name[2:] if name.startswith("*.") else name)
        except RecordError as exc:
            raise KeyError_(f"key {key!r}: {exc}") from None
        return name

    @property
    def acme_lock_key(self) -> str:
        return self.acme_root + "lock"

    @property
    def acme_account_key(self) -> str:
        return self.acme_root + "account"

    @property
    def acme_challenges_root(self) -> str:
        return self.acme_root + "challenges/"

    def acme_challenge_key(self, token: str) -> str:
        if not TOKEN_RE.fullmatch(token):
            raise RecordError("ACME token", "must be 1-128 of [A-Za-z0-9_-]", token)
        return self.acme_challenges_root + token

    # instance keys -----------------------------------------------------------
    def announce_key(self, path: AnnouncePath, instance_id: str) -> str:
        return f"{self.prefix}/{ANNOUNCE}{path}/{check_label('ID', instance_id)}"

    def service_key(self, path: AnnouncePath, instance_id: str) -> str:
        return f"{self.prefix}/{SERVICES}{path}/{check_label('ID', instance_id)}"

    def status_key(self, path: AnnouncePath, instance_id: str) -> str:
        return f"{self.prefix}/{STATUS}{path}/{check_label('ID', instance_id)}"

    def parse_status_key(self, key: str) -> tuple[AnnouncePath, str]:
        return self._parse_instance_key(key, STATUS)

    def parse_announce_key(self, key: str) -> tuple[AnnouncePath, str]:
        return self._parse_instance_key(key, ANNOUNCE)

    def parse_service_key(self, key: str) -> tuple[AnnouncePath, str]:
        return self._parse_instance_key(key, SERVICES)

    def _parse_instance_key(self, key: str, kind: str) -> tuple[AnnouncePath, str]:
        root = self.root(kind)
        if not key.startswith(root):
            raise KeyError_(f"key {key!r} is not under {root}")
        rest = key[len(root):]
        path_text, _, instance_id = rest.rpartition("/")
        try:
            path = AnnouncePath.parse("/" + path_text, field_name="key path")
            check_label("ID", instance_id)
        except RecordError as exc:
            raise KeyError_(f"key {key!r}: {exc}") from None
        return path, instance_id

    # listen paths --------------------------------------------------------------
    def services_watch_prefix(self, listen_path: str) -> str:
        """`/services/internal/app1/dev` → the etcd prefix that holds that subtree.

        The path may name 1-5 segments after `/services`; each must be a DNS label
        (the fifth, NAME, may hold dots). The result ends with `/`, so `/dev` never
        matches `/devel`.
        """
        rule = "must be /services/<scope>[/<app>[/<env>[/<service>[/<name>]]]]"
        text = listen_path.strip()
        if not text.startswith(f"/{SERVICES}/"):
            raise RecordError("LISTEN_PATH", rule, listen_path)
        parts = text[len(SERVICES) + 2:].rstrip("/").split("/")
        if not 1 <= len(parts) <= 5:
            raise RecordError("LISTEN_PATH", rule, listen_path)
        try:
            for part in parts[:4]:
                check_label("LISTEN_PATH", part)
            if len(parts) == 5:
                check_hostname("LISTEN_PATH", parts[4])
        except RecordError:
            raise RecordError("LISTEN_PATH", rule, listen_path) from None
        return f"{self.prefix}/{SERVICES}/" + "/".join(parts) + "/"

    # SkyDNS ----------------------------------------------------------------------
    def skydns_key(self, dns_name: str) -> str:
        """`a.b.example.` → `<prefix>/skydns/example/b/a` (labels reversed)."""
        name = dns_name.rstrip(".").lower()
        check_hostname("DNS name", name)
        return self.skydns_root + "/".join(reversed(name.split(".")))

    def parse_skydns_key(self, key: str) -> str:
        """The inverse of `skydns_key`: the DNS name with a trailing dot."""
        root = self.skydns_root
        if not key.startswith(root):
            raise KeyError_(f"key {key!r} is not under {root}")
        labels = [p for p in key[len(root):].split("/") if p]
        if not labels:
            raise KeyError_(f"key {key!r} names no DNS labels")
        return ".".join(reversed(labels)) + "."
