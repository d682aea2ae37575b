"""The etcd client announce uses: etcd's JSON gateway, or gRPC in the two cases it cannot be.

announce speaks to etcd through the JSON gateway (`buoy.etcd.gateway`, standard library
only). Two documented setups cannot work through it. etcd with auth enabled refuses, at
its gateway, every client certificate that has a common name (under gRPC the CN names
the user; the gateway would ignore it, so etcd says no). And an `etcd grpc-proxy` (one per
host at scale, docs/scale.md) serves gRPC only: its HTTP port answers 404 to the gateway's
paths. Then, and only then, announce switches to the gRPC store (`buoy.etcd.store`) and
says so once: it works as before but costs what gRPC costs (about 25 MB more). A client
certificate without a CN, with a user/password, keeps announce on the gateway.
"""

from __future__ import annotations

import logging
from typing import Any

from buoy.etcd.gateway import (
    CommonNameRefused,
    EtcdGateway,
    GatewayNotServed,
    GatewayRefused,
    GatewayUnavailable,
    Observer,
)
from buoy.etcd.settings import EtcdSettings

log = logging.getLogger(__name__)


class StoreClient:
    """The gateway's calls over the gRPC store, with the gateway's errors."""

    def __init__(self, settings: EtcdSettings, observer: Observer | None) -> None:
        from buoy.etcd.store import EtcdStore

        self.store = EtcdStore(settings, observer=observer)

    def _do(self, fn: Any, *args: Any) -> Any:
        from buoy.etcd.store import StoreError, StoreUnavailable

        try:
            return fn(*args)
        except StoreUnavailable as exc:
            raise GatewayUnavailable(str(exc)) from None
        except StoreError as exc:
            raise GatewayRefused(str(exc)) from None

    def grant(self, ttl: int) -> int:
        return int(self._do(self.store.grant, ttl))

    def put(self, key: str, value: str, lease: int) -> None:
        self._do(lambda: self.store.put(key, value, lease=lease))

    def keepalive(self, lease: int) -> int:
        return int(self._do(self.store.refresh, lease))

    def revoke(self, lease: int) -> None:
        self._do(self.store.revoke, lease)

    def authenticate(self) -> None:
        if self.store.settings.user:
            self._do(self.store.check_credentials)

    def close(self) -> None:
        self.store.close()


class AnnounceClient:
    """The gateway, until etcd refuses it for a certificate's CN or the endpoint serves no
    gateway (a grpc-proxy); then the gRPC store."""

    def __init__(self, settings: EtcdSettings, observer: Observer | None = None) -> None:
        self.settings = settings
        self.observer = observer
        self.impl: EtcdGateway | StoreClient = EtcdGateway(settings, observer)

    @property
    def transport(self) -> str:
        return "grpc" if isinstance(self.impl, StoreClient) else "json-gateway"

    def _call(self, name: str, *args: Any) -> Any:
        try:
            return getattr(self.impl, name)(*args)
        except (CommonNameRefused, GatewayNotServed) as exc:
            if isinstance(self.impl, StoreClient):
                raise
            if isinstance(exc, GatewayNotServed):
                log.warning("etcd endpoint %s serves no JSON gateway (%s): an etcd grpc-proxy? "
                            "Using gRPC instead (about 25 MB more memory)", self.settings.urls,
                            exc)
            else:
                log.warning("etcd refuses a client certificate with a common name at its JSON "
                            "gateway (%s); using gRPC instead (about 25 MB more memory). A "
                            "certificate without a CN plus BUOY_ETCD_USER/PASSWORD avoids this",
                            exc)
            self.impl.close()
            self.impl = StoreClient(self.settings, self.observer)
            return getattr(self.impl, name)(*args)

    def grant(self, ttl: int) -> int:
        return int(self._call("grant", ttl))

    def put(self, key: str, value: str, lease: int) -> None:
        self._call("put", key, value, lease)

    def keepalive(self, lease: int) -> int:
        return int(self._call("keepalive", lease))

    def revoke(self, lease: int) -> None:
        self._call("revoke", lease)

    def authenticate(self) -> None:
        self._call("authenticate")

    def close(self) -> None:
        self.impl.close()
