"""Which etcd role each buoy agent runs as, and what it may read or write (pure).

| role            | read                  | readwrite                 |
|-----------------|-----------------------|---------------------------|
| buoy-announce   |                       | /announce/                |
| buoy-register   |                       | /announce/ (label-only), /services/, /skydns/, /status/ |
| buoy-listen     | /services/            | /skydns/ (vhost records), /certs/, /acme/ |
| buoy-dns        | /skydns/              |                           |

Users carry the role's name, so a client certificate with that common name also
authenticates as that user when etcd runs with `--client-cert-auth`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from buoy.etcd.keys import KeyLayout

ROLE_PREFIX_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,40}$")
READ, READWRITE = "read", "readwrite"


def prefix_range_end(prefix: str) -> str:
    """The end of etcd's range for every key starting with `prefix` (last byte + 1)."""
    raw = bytearray(prefix.encode())
    for i in reversed(range(len(raw))):
        if raw[i] < 0xFF:
            raw[i] += 1
            return bytes(raw[: i + 1]).decode()
    raise ValueError(f"no range end for prefix {prefix!r}")


@dataclass(frozen=True)
class Grant:
    """`perm` on every key under `prefix`."""

    perm: str
    prefix: str

    @property
    def range_end(self) -> str:
        return prefix_range_end(self.prefix)

    def as_tuple(self) -> tuple[str, str, str]:
        return (self.perm, self.prefix, self.range_end)


@dataclass(frozen=True)
class RoleSpec:
    agent: str
    name: str
    grants: tuple[Grant, ...]

    @property
    def user(self) -> str:
        """The user that runs this agent has the role's name."""
        return self.name


def plan_roles(keys: KeyLayout, role_prefix: str = "buoy-", listen_advertises: bool = True,
               register_labels: bool = True) -> tuple[RoleSpec, ...]:
    """The role of each agent under `keys`' prefix.

    register writes /announce for containers that carry buoy labels instead of
    running `buoy announce`; without that, it only reads /announce. It also writes
    its verdict on every announce it refuses under /status (read by `buoy ls`).
    listen reads and writes /certs and /acme (HTTPS certificates, ACME state).
    """
    ann, svc, dns = keys.announce_root, keys.services_root, keys.skydns_root
    listen: tuple[Grant, ...] = ((Grant(READ, svc), Grant(READWRITE, dns)) if listen_advertises
                                 else (Grant(READ, svc),))
    # HTTPS: the certificates and the ACME account key, which no other role may read;
    # the listener that holds the ACME lock writes both
    listen += (Grant(READWRITE, keys.certs_root), Grant(READWRITE, keys.acme_root))
    return (
        RoleSpec("announce", f"{role_prefix}announce", (Grant(READWRITE, ann),)),
        RoleSpec("register", f"{role_prefix}register",
                 (Grant(READWRITE if register_labels else READ, ann), Grant(READWRITE, svc),
                  Grant(READWRITE, dns), Grant(READWRITE, keys.status_root))),
        RoleSpec("listen", f"{role_prefix}listen", listen),
        RoleSpec("dns", f"{role_prefix}dns", (Grant(READ, dns),)),
    )
