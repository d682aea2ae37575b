"""Bring etcd's roles and users in line with a role plan; report every step in one line each.

Every step first reads what exists, then changes only what differs, so running it
twice is safe: the second run reports `unchanged`. Permissions a role holds beyond
the plan are reported and left alone (they may belong to another installation
sharing the role names), unless `prune` is asked for.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from buoy.etcd.auth import EtcdAuth
from buoy.etcd.store import EtcdStore

if TYPE_CHECKING:
    from buoy.ops.role_plan import RoleSpec

log = logging.getLogger(__name__)
ROOT = "root"  # etcd's built-in superuser and role names

Report = Callable[[str], None]


class AdminError(Exception):
    """The requested change cannot be made as asked (a setting is missing)."""


@dataclass(frozen=True)
class AdminRequest:
    """What `buoy etcd-setup-roles` was asked to do."""

    roles: tuple[RoleSpec, ...]
    passwords: Mapping[str, str]  # user name -> password; users to create or update
    create_users: bool = False
    enable_auth: bool = False
    root_password: str | None = None
    prune: bool = False  # revoke permissions beyond the plan


def ensure_roles(auth: EtcdAuth, roles: tuple[RoleSpec, ...], report: Report,
                 prune: bool = False) -> None:
    existing = set(auth.roles())
    for spec in roles:
        if spec.name not in existing:
            auth.role_add(spec.name)
            report(f"role {spec.name}: created")
        have = set(auth.role_permissions(spec.name))
        changed = False
        for grant in spec.grants:
            if grant.as_tuple() not in have:
                auth.role_grant(spec.name, grant.perm, grant.prefix, grant.range_end)
                report(f"role {spec.name}: granted {grant.perm} {grant.prefix}")
                changed = True
        wanted = {g.as_tuple() for g in spec.grants}
        # A grant on the same range replaced the old type; what remains beyond the plan is
        # reported so an operator sees rights this run did not give.
        have = set(auth.role_permissions(spec.name)) if changed else have
        for perm, key, range_end in sorted(have - wanted):
            if prune:
                auth.role_revoke(spec.name, key, range_end)
                report(f"role {spec.name}: revoked {perm} on [{key}, {range_end})")
                changed = True
            else:
                report(f"role {spec.name}: WARNING also holds {perm} on [{key}, {range_end}) "
                       "(not part of this plan; left alone, --prune removes it)")
        if not changed and spec.name in existing:
            report(f"role {spec.name}: unchanged")


def ensure_users(auth: EtcdAuth, request: AdminRequest, report: Report) -> None:
    existing = set(auth.users())
    for spec in request.roles:
        user = spec.user
        password = request.passwords.get(user)
        if password is None:
            report(f"user {user}: skipped (no password given)")
            continue
        if user in existing:
            # Setting the same password again is harmless; a new one rotates it.
            auth.user_set_password(user, password)
            report(f"user {user}: exists, password set")
        else:
            auth.user_add(user, password)
            report(f"user {user}: created")
        if spec.name not in auth.user_roles(user):
            auth.user_grant_role(user, spec.name)
            report(f"user {user}: granted role {spec.name}")


def ensure_auth_enabled(auth: EtcdAuth, request: AdminRequest, authenticated: bool,
                        report: Report) -> None:
    """Create root (user and role) when missing, then enable authentication."""
    if ROOT not in auth.users():
        if not request.root_password:
            raise AdminError("BUOY_ROOT_PASSWORD is required to create the root user")
        auth.user_add(ROOT, request.root_password)
        report(f"user {ROOT}: created")
    if ROOT not in auth.user_roles(ROOT):
        auth.user_grant_role(ROOT, ROOT)
        report(f"user {ROOT}: granted role {ROOT}")
    if authenticated:
        # Authenticate only succeeds while auth is on, so there is nothing to switch on.
        report("auth: already enabled")
        return
    auth.enable()
    report("auth: enabled")


def apply(store: EtcdStore, request: AdminRequest, report: Report) -> None:
    """Roles first, then users, then (last, as it locks out anonymous clients) auth."""
    auth = EtcdAuth(store)
    # Decide before any change whether root can be created, so a refusal changes nothing.
    if (request.enable_auth and not request.root_password and not store.settings.user
            and ROOT not in auth.users()):
        raise AdminError("BUOY_ROOT_PASSWORD is required to create the root user")
    ensure_roles(auth, request.roles, report, request.prune)
    if request.create_users:
        ensure_users(auth, request, report)
    if request.enable_auth:
        ensure_auth_enabled(auth, request, bool(store.settings.user), report)
    log.info("etcd-setup-roles done roles=%d", len(request.roles))
