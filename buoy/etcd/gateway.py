"""A small etcd v3 client over etcd's JSON gateway, standard library only.

`buoy announce` runs in every container, so it does not load gRPC (31 MB after import):
it speaks HTTP/1.1 + JSON to etcd's gateway (`/v3/...`, part of etcd's supported API;
keys and values are base64, 64-bit ids are decimal strings). Only what announce needs
is here: lease grant, keep-alive and revoke, put, and authenticate.

One persistent connection to one endpoint at a time: a request that cannot reach it
(refused, reset, timed out, or etcd answering `Unavailable`) moves on to the next
endpoint; when none answers, `GatewayUnavailable`. A refusal from etcd itself (bad
credentials, permission denied) is `GatewayRefused`; an unknown lease `LeaseNotFound`.
With user/password, a token is fetched from `/v3/auth/authenticate` and fetched again
when etcd says it expired.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from buoy.etcd.http1 import Connection
from buoy.etcd.records import RecordError
from buoy.etcd.settings import Endpoint, EtcdSettings

if TYPE_CHECKING:
    import ssl

log = logging.getLogger(__name__)
Observer = Callable[[bool, "Exception | None"], None]
UNAVAILABLE, UNAUTHENTICATED, NOT_FOUND = 14, 16, 5  # gRPC status codes in error bodies


class GatewayError(Exception):
    """etcd could not do what was asked."""


class GatewayUnavailable(GatewayError):
    """No endpoint answered."""


class GatewayRefused(GatewayError):
    """etcd answered and refused (credentials, permissions, a bad request)."""

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


class LeaseNotFound(GatewayRefused):
    """etcd does not know the lease (it expired, or etcd lost it)."""


class GatewayNotServed(GatewayRefused):
    """The endpoint answers HTTP but serves no JSON gateway (an `etcd grpc-proxy`: gRPC only)."""


class CommonNameRefused(GatewayRefused):
    """With auth enabled, etcd's gateway refuses a client certificate that has a common name
    (it would not use the CN as the user, as gRPC does)."""


def tls_context(settings: EtcdSettings) -> ssl.SSLContext:
    """The CA to trust and the client certificate to show; a file that does not load is a
    RecordError naming its setting."""
    import ssl  # only for https: it maps libssl and libcrypto (megabytes of RSS)

    try:
        context = ssl.create_default_context(cafile=settings.ca_cert)
    except OSError as exc:
        raise RecordError("BUOY_ETCD_CA", f"cannot be loaded ({exc})", settings.ca_cert) from None
    if settings.cert and settings.key:
        try:
            context.load_cert_chain(settings.cert, settings.key)
        except OSError as exc:
            raise RecordError("BUOY_ETCD_CERT", f"and BUOY_ETCD_KEY cannot be loaded ({exc})",
                              settings.cert) from None
    return context


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


class EtcdGateway:
    """Lease and put calls against etcd's JSON gateway, failing over across endpoints."""

    def __init__(self, settings: EtcdSettings, observer: Observer | None = None) -> None:
        self.settings = settings
        self.observer = observer
        self._current = 0
        self._conn: Connection | None = None
        self._token: str | None = None
        self._ssl: ssl.SSLContext | None = None
        if any(e.secure for e in settings.endpoints):
            self._ssl = tls_context(settings)

    # the calls announce makes -----------------------------------------------------------
    def grant(self, ttl: int) -> int:
        return int(self._call("/v3/lease/grant", {"TTL": ttl})["ID"])

    def put(self, key: str, value: str, lease: int) -> None:
        self._call("/v3/kv/put", {"key": b64(key), "value": b64(value), "lease": str(lease)})

    def keepalive(self, lease: int) -> int:
        """Refresh `lease`; its remaining TTL, 0 when etcd no longer knows it."""
        reply = self._call("/v3/lease/keepalive", {"ID": str(lease)})
        return int(reply.get("result", reply).get("TTL", 0))

    def revoke(self, lease: int) -> None:
        """Revoke `lease` (its keys go at once); an unknown lease is already gone."""
        try:
            self._call("/v3/lease/revoke", {"ID": str(lease)})
        except LeaseNotFound:
            pass

    def authenticate(self) -> None:
        """Fetch a token now (with user/password): refused credentials raise GatewayRefused."""
        if self.settings.user:
            self._token = None
            self._call("/v3/auth/authenticate", self._credentials(), auth=False)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    # internals ------------------------------------------------------------------------
    def _credentials(self) -> dict[str, str]:
        return {"name": self.settings.user or "", "password": self.settings.password or ""}

    def _call(self, path: str, body: dict[str, Any], *, auth: bool = True) -> dict[str, Any]:
        try:
            if auth and self.settings.user and self._token is None:
                self._login()
            try:
                reply = self._request(path, body, auth)
            except GatewayRefused as exc:
                if not (auth and self.settings.user and exc.code == UNAUTHENTICATED):
                    raise
                self._login()  # the token expired (or etcd restarted): once more with a new one
                reply = self._request(path, body, auth)
        except GatewayUnavailable as exc:
            self._observe(False, exc)
            raise
        except GatewayRefused as exc:
            self._observe(True, exc)
            raise
        self._observe(True, None)
        return reply

    def _login(self) -> None:
        self._token = None
        token = self._request("/v3/auth/authenticate", self._credentials(), False).get("token")
        if not token:
            raise GatewayRefused("etcd returned no auth token")
        self._token = str(token)

    def _observe(self, reached: bool, error: Exception | None) -> None:
        if self.observer is not None:
            self.observer(reached, error)

    def _request(self, path: str, body: dict[str, Any], auth: bool) -> dict[str, Any]:
        """POST to the current endpoint, then each other one in turn; the first answer wins."""
        data = json.dumps(body).encode()
        headers = {"Content-Type": "application/json"}
        if auth and self._token:
            headers["Authorization"] = self._token
        errors = []
        count = len(self.settings.endpoints)
        for step in range(count):
            index = (self._current + step) % count
            endpoint = self.settings.endpoints[index]
            try:
                status, reply = self._post(index, endpoint, path, data, headers)
            except (OSError, ValueError) as exc:
                self.close()
                errors.append(f"{endpoint.host}:{endpoint.port}: {exc or type(exc).__name__}")
                continue
            if errors:
                log.warning("etcd endpoint failover: now %s:%d (%s)", endpoint.host,
                            endpoint.port, "; ".join(errors))
                errors.clear()
            self._current = index
            error = reply.get("error")
            if status == 200 and not isinstance(error, dict):
                return reply
            if isinstance(error, dict):  # a streaming call (keepalive) reports errors inside
                reply = {"code": error.get("grpc_code"), "message": error.get("message")}
            code = reply.get("code")
            message = str(reply.get("message") or reply.get("error") or f"HTTP {status}")
            if code == UNAVAILABLE or status in (502, 503, 504):
                errors.append(f"{endpoint.host}:{endpoint.port}: {message}")
                self.close()
                continue
            if code == NOT_FOUND and "lease not found" in message:
                raise LeaseNotFound(message, code)
            if status == 404 and code is None:
                raise GatewayNotServed(message, None)
            if status == 400 and "CommonName" in message:
                raise CommonNameRefused(message, None)
            raise GatewayRefused(message, code if isinstance(code, int) else None)
        raise GatewayUnavailable("; ".join(errors))

    def _post(self, index: int, endpoint: Endpoint, path: str, data: bytes,
              headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
        """One request on the kept-open connection; a stale one is replaced once."""
        for attempt in (1, 2):
            fresh = self._conn is None or not self._conn.is_open or index != self._current
            if fresh:
                self.close()
                self._conn = Connection(endpoint.host, endpoint.port, self.settings.timeout,
                                        self._ssl if endpoint.secure else None)
                self._current = index
            assert self._conn is not None
            try:
                status, raw = self._conn.request("POST", path, data, headers)
            except ConnectionError:
                self.close()
                if fresh or attempt == 2:
                    raise
                continue  # the server closed the idle connection: reconnect once
            lines = raw.decode(errors="replace").strip().splitlines()
            try:
                reply = json.loads(lines[0]) if lines else {}
            except ValueError:  # not the gateway's JSON: keep the text as the message
                reply = {"message": " ".join(lines)[:300]}
            return status, reply if isinstance(reply, dict) else {}
        raise ConnectionError("not reached")  # pragma: no cover - the loop returns or raises
