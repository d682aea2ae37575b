"""`buoy etcd-setup-roles`: the etcd roles (and users) each buoy agent runs as.

The plan is pure: which role may read or write which key prefix. Each agent gets
only what it needs, so a container's credentials (announce) cannot touch
/services or /skydns:

| role            | read                  | readwrite                 |
|-----------------|-----------------------|---------------------------|
| buoy-announce   |                       | /announce/                |
| buoy-register   |                       | /announce/ (label-only), /services/, /skydns/, /status/ |
| buoy-listen     | /services/            | /skydns/ (vhost records)  |
| buoy-dns        | /skydns/              |                           |

Users carry the role's name, so a client certificate with that common name also
authenticates as that user when etcd runs with `--client-cert-auth`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import click

from buoy.cli_common import Common, SettingError, common_options
from buoy.keys import KeyLayout

ROLE_PREFIX_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,40}$")
READ, READWRITE = "read", "readwrite"
F = TypeVar("F", bound=Callable[..., Any])


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
    """
    ann, svc, dns = keys.announce_root, keys.services_root, keys.skydns_root
    listen = (Grant(READ, svc), Grant(READWRITE, dns)) if listen_advertises else (Grant(READ, svc),)
    return (
        RoleSpec("announce", f"{role_prefix}announce", (Grant(READWRITE, ann),)),
        RoleSpec("register", f"{role_prefix}register",
                 (Grant(READWRITE if register_labels else READ, ann), Grant(READWRITE, svc),
                  Grant(READWRITE, dns), Grant(READWRITE, keys.status_root))),
        RoleSpec("listen", f"{role_prefix}listen", listen),
        RoleSpec("dns", f"{role_prefix}dns", (Grant(READ, dns),)),
    )


def _password_option(agent: str) -> Callable[[F], F]:
    return click.option(f"--{agent}-password", envvar=f"BUOY_{agent.upper()}_PASSWORD", default=None,
                        help=f"Password of the {agent} user (with --create-users).")


@click.command("etcd-setup-roles")
@click.option("--role-prefix", envvar="BUOY_ROLE_PREFIX", default="buoy-", show_default=True,
              help="Role and user names start with this (one set per installation).")
@click.option("--listen-advertise/--no-listen-advertise", envvar="BUOY_LISTEN_ADVERTISE",
              default=True, show_default=True,
              help="Let listen write /skydns (needed for listen --advertise-ip).")
@click.option("--register-labels/--no-register-labels", envvar="BUOY_REGISTER_LABELS",
              default=True, show_default=True,
              help="Let register write /announce (for label-only containers).")
@click.option("--prune", envvar="BUOY_PRUNE", is_flag=True,
              help="Revoke permissions these roles hold beyond the plan.")
@click.option("--create-users", envvar="BUOY_CREATE_USERS", is_flag=True,
              help="Create (or update) a user per role whose password is given.")
@_password_option("announce")
@_password_option("register")
@_password_option("listen")
@_password_option("dns")
@click.option("--enable-auth", envvar="BUOY_ENABLE_AUTH", is_flag=True,
              help="Create the root user if missing, then turn etcd authentication on.")
@click.option("--root-password", envvar="BUOY_ROOT_PASSWORD", default=None,
              help="Password for a root user created by --enable-auth.")
@common_options
def etcd_setup_roles(common: Common, role_prefix: str, listen_advertise: bool,
                     register_labels: bool, prune: bool, create_users: bool,
                     announce_password: str | None, register_password: str | None,
                     listen_password: str | None, dns_password: str | None, enable_auth: bool,
                     root_password: str | None) -> int:
    """Create the etcd roles (and users) for buoy's agents; safe to run again."""
    from buoy.auth_admin import AdminError, AdminRequest, apply
    from buoy.store import EtcdStore, StoreError

    if not ROLE_PREFIX_RE.fullmatch(role_prefix):
        raise SettingError(f"BUOY_ROLE_PREFIX must match {ROLE_PREFIX_RE.pattern}: {role_prefix!r}")
    roles = plan_roles(common.keys, role_prefix, listen_advertise, register_labels)
    given = {"announce": announce_password, "register": register_password,
             "listen": listen_password, "dns": dns_password}
    passwords = {spec.user: pw for spec in roles if (pw := given[spec.agent])}
    if create_users and not passwords:
        raise SettingError("--create-users needs at least one of BUOY_ANNOUNCE_PASSWORD, "
                           "BUOY_REGISTER_PASSWORD, BUOY_LISTEN_PASSWORD, BUOY_DNS_PASSWORD")
    request = AdminRequest(roles, passwords, create_users, enable_auth, root_password, prune)
    store = EtcdStore(common.etcd)
    try:
        store.check_credentials()
        apply(store, request, click.echo)
    except AdminError as exc:
        raise SettingError(str(exc)) from None
    except StoreError as exc:
        hint = " (run it with root credentials: --etcd-user root)" if "permission" in str(exc) else ""
        raise click.ClickException(f"etcd refused: {exc}{hint}") from None
    finally:
        store.close()
    return 0
