"""`buoy etcd-setup-roles`: the etcd roles (and users) each buoy agent runs as.

The plan (which role may read or write which key prefix) is `buoy.ops.role_plan`;
`buoy.ops.auth_admin` brings etcd in line with it. Each agent gets only what it needs,
so a container's credentials (announce) cannot touch /services or /skydns.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from buoy.cli_common import Common, SettingError, common_options
from buoy.ops.role_plan import ROLE_PREFIX_RE, plan_roles

F = TypeVar("F", bound=Callable[..., Any])


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
    from buoy.etcd.store import EtcdStore, StoreError
    from buoy.ops.auth_admin import AdminError, AdminRequest, apply

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
