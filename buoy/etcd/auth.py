"""etcd's users and roles: what `buoy etcd-setup-roles` administers, over a store's connection.

The requests are etcd's own protobuf messages; the store (`buoy.etcd.store`) sends them.
"""

from __future__ import annotations

from typing import Any

from etcd3 import etcdrpc
from etcd3.etcdrpc import auth_pb2

from buoy.etcd.store import EtcdStore


class EtcdAuth:
    """Roles, users and the auth switch of the etcd `store` talks to (needs root with auth on)."""

    def __init__(self, store: EtcdStore) -> None:
        self.store = store

    def _rpc(self, what: str, method: str, request: Any) -> Any:
        return self.store.auth_rpc(what, method, request)

    def roles(self) -> list[str]:
        """Names of every etcd role (needs root when auth is enabled)."""
        return list(self._rpc("role list", "RoleList", etcdrpc.AuthRoleListRequest()).roles)

    def role_permissions(self, role: str) -> list[tuple[str, str, str]]:
        """A role's permissions as (`read`|`write`|`readwrite`, key, range_end)."""
        resp = self._rpc(f"role get {role}", "RoleGet", etcdrpc.AuthRoleGetRequest(role=role))
        return [(auth_pb2.Permission.Type.Name(p.permType).lower(), p.key.decode(errors="replace"),
                 p.range_end.decode(errors="replace")) for p in resp.perm]

    def role_add(self, role: str) -> None:
        self._rpc(f"role add {role}", "RoleAdd", etcdrpc.AuthRoleAddRequest(name=role))

    def role_grant(self, role: str, perm: str, key: str, range_end: str) -> None:
        """Grant `perm` (`read`|`write`|`readwrite`) on [key, range_end); replaces the type
        of an existing permission on the same range."""
        permission = auth_pb2.Permission(permType=auth_pb2.Permission.Type.Value(perm.upper()),
                                         key=key.encode(), range_end=range_end.encode())
        self._rpc(f"role grant {role} {perm} {key}", "RoleGrantPermission",
                       etcdrpc.AuthRoleGrantPermissionRequest(name=role, perm=permission))

    def role_revoke(self, role: str, key: str, range_end: str) -> None:
        """Remove a role's permission on exactly [key, range_end)."""
        self._rpc(f"role revoke {role} {key}", "RoleRevokePermission",
                       etcdrpc.AuthRoleRevokePermissionRequest(role=role, key=key.encode(),
                                                               range_end=range_end.encode()))

    def users(self) -> list[str]:
        return list(self._rpc("user list", "UserList", etcdrpc.AuthUserListRequest()).users)

    def user_roles(self, user: str) -> list[str]:
        resp = self._rpc(f"user get {user}", "UserGet", etcdrpc.AuthUserGetRequest(name=user))
        return list(resp.roles)

    def user_add(self, user: str, password: str) -> None:
        self._rpc(f"user add {user}", "UserAdd",
                       etcdrpc.AuthUserAddRequest(name=user, password=password))

    def user_set_password(self, user: str, password: str) -> None:
        self._rpc(f"user passwd {user}", "UserChangePassword",
                       etcdrpc.AuthUserChangePasswordRequest(name=user, password=password))

    def user_grant_role(self, user: str, role: str) -> None:
        self._rpc(f"user grant {user} {role}", "UserGrantRole",
                       etcdrpc.AuthUserGrantRoleRequest(user=user, role=role))

    def enable(self) -> None:
        """Turn authentication on (etcd needs a `root` user with the `root` role first)."""
        self._rpc("auth enable", "AuthEnable", etcdrpc.AuthEnableRequest())
