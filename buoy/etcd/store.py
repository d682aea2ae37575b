"""The etcd store: the only module that imports an etcd client (with its helpers `auth`,
`paging` and `keepalive`, which build requests the store sends).

It wraps the `etcd3` API (the maintained `cslab-etcd3` fork) behind a few
methods with buoy's own types and errors:

* every endpoint goes into one multi-endpoint client with failover; a failed
  endpoint is retried after `ENDPOINT_RETRY` seconds, not the library's 300 s;
* gRPC reconnects with a short backoff (`grpc.max_reconnect_backoff_ms`), so a
  restarted etcd is seen again within about a second;
* TLS (CA, client certificate and key) and user/password are supported; an
  expired auth token is renewed by re-connecting.

Any failure to reach etcd surfaces as `StoreUnavailable`; callers retry through
`buoy.etcd.retry`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import etcd3
import etcd3.exceptions as etcd_exc
import grpc
from etcd3 import etcdrpc

from buoy.etcd import paging as store_paging
from buoy.etcd.keepalive import KeepAliveStream
from buoy.etcd.settings import EtcdSettings

log = logging.getLogger(__name__)

ENDPOINT_RETRY = 1.0
GRPC_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
    ("grpc.keepalive_time_ms", 10000),
    ("grpc.keepalive_timeout_ms", 5000),
]


class StoreError(Exception):
    """An etcd operation failed."""


class StoreUnavailable(StoreError):
    """etcd could not be reached (or refused us for now); retry later."""


class FutureRevision(StoreError):
    """The requested revision is ahead of etcd's: the etcd we talk to has a shorter history."""


class TooLarge(StoreError):
    """A watch response was larger than the client's receive limit: take a new snapshot."""


class Compacted(StoreError):
    """The requested revision was compacted away."""

    def __init__(self, compact_revision: int) -> None:
        super().__init__(f"revision compacted up to {compact_revision}")
        self.compact_revision = compact_revision


@dataclass(frozen=True)
class KeyValue:
    key: str
    value: bytes
    mod_revision: int
    create_revision: int
    lease: int
    version: int = 0  # puts since the key was created (0 where a watch event does not say)


@dataclass(frozen=True)
class Snapshot:
    """A prefix read: its keys, the revision it was taken at and the cluster that answered."""

    revision: int
    cluster_id: int
    kvs: list[KeyValue]


@dataclass(frozen=True)
class WatchEvent:
    kind: Literal["put", "delete"]
    key: str
    value: bytes
    revision: int
    lease: int
    create_revision: int = 0  # when the key was created (0 for a delete)
    version: int = 0


@dataclass(frozen=True)
class WatchBatch:
    """One watch response: its events, and the revision it proves we have seen."""

    events: tuple[WatchEvent, ...]
    revision: int


WatchCallback = Callable[["WatchBatch | StoreError"], None]
# Told after every etcd call and watch response: did etcd answer, and the error if any.
StoreObserver = Callable[[bool, "StoreError | None"], None]
_AUTH_CODES = (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED)
# What etcd's Authenticate answers to a wrong user/password (INVALID_ARGUMENT) or to a
# user given while authentication is off (FAILED_PRECONDITION).
_AUTH_REJECTED = (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION)


class EtcdStore:
    """A thread-safe handle on etcd; connects lazily and re-connects after failures."""

    def __init__(self, settings: EtcdSettings, observer: StoreObserver | None = None) -> None:
        self.settings = settings
        self.where = settings.urls
        self.observer = observer
        self._lock = threading.Lock()
        self._client: Any = None
        self.keepalive = KeepAliveStream()  # one lease keep-alive stream for every refresh

    # connection -------------------------------------------------------------------
    def _connect(self) -> Any:
        s = self.settings
        creds = None
        if s.ca_cert:
            creds = etcd3.MultiEndpointEtcd3Client.get_secure_creds(s.ca_cert, s.key, s.cert)
        # Pages are sized well under the receive limit; the limit itself is raised from
        # gRPC's 4 MiB as a safety net for a large watch response.
        opts = [*GRPC_OPTIONS,
                ("grpc.max_receive_message_length", store_paging.MAX_RECEIVE_BYTES)]
        endpoints = [
            etcd3.Endpoint(e.host, e.port, secure=e.secure, creds=creds if e.secure else None,
                           time_retry=ENDPOINT_RETRY, opts=opts)
            for e in s.endpoints
        ]
        return etcd3.MultiEndpointEtcd3Client(
            endpoints=endpoints, timeout=s.timeout, user=s.user, password=s.password,
            failover=True)

    def _get_client(self) -> Any:
        with self._lock:
            if self._client is None:
                self._client = self._connect()
            return self._client

    def _drop_client(self) -> None:
        with self._lock:
            client, self._client = self._client, None
        self.keepalive.close()
        if client is not None:
            try:
                client.close()
            except Exception:  # noqa: BLE001 - closing a broken client may fail; nothing to do
                pass

    def _observe(self, reached: bool, error: StoreError | None) -> None:
        if self.observer is not None:
            self.observer(reached, error)

    @contextmanager
    def _call(self, what: str) -> Iterator[Any]:
        """Run one etcd call; translate failures into StoreError types; tell the observer."""
        try:
            with self._translated(what) as client:
                yield client
        except StoreUnavailable as exc:
            self._observe(False, exc)
            raise
        except StoreError as exc:  # refused or compacted: etcd answered
            self._observe(True, exc)
            raise
        self._observe(True, None)

    @contextmanager
    def _translated(self, what: str) -> Iterator[Any]:
        """Run one etcd call; translate every failure into StoreError types."""
        try:
            yield self._get_client()
        except etcd_exc.RevisionCompactedError as exc:
            raise Compacted(exc.compacted_revision) from None
        except (etcd_exc.Etcd3Exception, ValueError) as exc:
            raise StoreUnavailable(f"{what}: {type(exc).__name__} {exc} "
                                   f"(etcd {self.where})") from None
        except grpc.RpcError as exc:
            code = exc.code() if hasattr(exc, "code") else None
            details = str(getattr(exc, "details", lambda: "")())
            if code in _AUTH_CODES and "token" in details:
                self._drop_client()  # the auth token expired: authenticate again
            if code == grpc.StatusCode.PERMISSION_DENIED:
                raise StoreError(f"{what}: permission denied (etcd {self.where})") from None
            if code == grpc.StatusCode.OUT_OF_RANGE and "future revision" in details:
                raise FutureRevision(f"{what}: {details} (etcd {self.where})") from None
            if code == grpc.StatusCode.OUT_OF_RANGE and "compacted" in details:
                raise Compacted(0) from None
            raise StoreUnavailable(f"{what}: {describe(exc)} (etcd {self.where})") from None

    def close(self) -> None:
        self._drop_client()

    # key/value ----------------------------------------------------------------------
    def get_prefix(self, prefix: str) -> tuple[int, list[KeyValue]]:
        """Every key under `prefix` and the revision the read was taken at (read in pages)."""
        snap = self.snapshot(prefix)
        return snap.revision, snap.kvs

    def snapshot(self, prefix: str) -> Snapshot:
        """Every key under `prefix`, with the revision and the cluster id of the read.

        Read in pages at one revision (`buoy.etcd.paging`), so its size has no limit.
        """
        with self._call(f"get {prefix}") as c:
            header, kvs = store_paging.read_prefix(c, prefix)
            return Snapshot(header.revision, header.cluster_id, [_kv(kv) for kv in kvs])

    def state_at(self, prefix: str, revision: int) -> Snapshot:
        """The keys under `prefix` as they were at `revision`, read now (in pages).

        The snapshot's revision and cluster id are etcd's current ones. Raises
        FutureRevision when etcd has not reached `revision` and Compacted when it no
        longer has it.
        """
        with self._call(f"get {prefix} at revision {revision}") as c:
            header, kvs = store_paging.read_prefix(c, prefix, revision)
            return Snapshot(header.revision, header.cluster_id, [_kv(kv) for kv in kvs])

    def get(self, key: str) -> KeyValue | None:
        with self._call(f"get {key}") as c:
            resp = c.get_response(key)
            return _kv(resp.kvs[0]) if resp.kvs else None

    def revision(self) -> int:
        """The store's current revision."""
        with self._call("revision") as c:
            return int(c.get_response("\0").header.revision)

    def put(self, key: str, value: str | bytes, lease: int | None = None) -> int:
        """Write `key`; returns the revision of the write."""
        with self._call(f"put {key}") as c:
            return int(c.put(key, value, lease=lease or 0).header.revision)

    def put_if_absent(self, key: str, value: str, lease: int | None = None) -> bool:
        """Create `key` only when it does not exist (one transaction); whether it was."""
        with self._call(f"create {key}") as c:
            return bool(c.put_if_not_exists(key, value, lease=lease))

    def delete(self, key: str) -> bool:
        with self._call(f"delete {key}") as c:
            return bool(c.delete(key))

    def delete_prefix(self, prefix: str) -> int:
        with self._call(f"delete {prefix}*") as c:
            return int(c.delete_prefix(prefix).deleted)

    def compact(self, revision: int) -> None:
        with self._call(f"compact {revision}") as c:
            c.compact(revision, physical=True)

    # leases ---------------------------------------------------------------------------
    def grant(self, ttl: int) -> int:
        with self._call(f"grant ttl={ttl}") as c:
            return int(c.lease(ttl).id)

    def refresh(self, lease_id: int) -> int:
        """Keep a lease alive; returns its TTL, or 0 when etcd no longer knows it.

        Sent on the store's one keep-alive stream (`buoy.etcd.keepalive`), opened again
        after it broke.
        """
        with self._call(f"refresh lease={lease_id:x}") as c:
            return self.keepalive.refresh(c, lease_id, c.timeout)

    def revoke(self, lease_id: int) -> None:
        with self._call(f"revoke lease={lease_id:x}") as c:
            try:
                c.revoke_lease(lease_id)
            except grpc.RpcError as exc:
                if exc.code() != grpc.StatusCode.NOT_FOUND:
                    raise

    def lease_ttl(self, lease_id: int) -> int:
        """Seconds left on a lease; -1 when it is gone."""
        # Without `keys`: asking for the lease's keys would need read access to all of
        # them, which a read-only agent (dns) does not have for register's /services keys.
        with self._call(f"ttl lease={lease_id:x}") as c:
            request = etcdrpc.LeaseTimeToLiveRequest(ID=lease_id, keys=False)
            return int(c.leasestub.LeaseTimeToLive(
                request, c.timeout, credentials=c.call_credentials, metadata=c.metadata).TTL)

    # watches -------------------------------------------------------------------------
    def watch_prefix(self, prefix: str, start_revision: int,
                     callback: WatchCallback) -> Callable[[], None]:
        """Stream changes under `prefix` from `start_revision` into `callback`.

        The callback runs on the client's watch thread and receives `WatchBatch`es
        (progress notifications included, with no events), or one `StoreError` when
        the stream ends (`Compacted` if the revision is gone). Returns `cancel`.
        """
        client = self._get_client()

        def on_response(resp: Any) -> None:
            if isinstance(resp, etcd_exc.RevisionCompactedError):
                callback(Compacted(resp.compacted_revision))
            elif (isinstance(resp, grpc.RpcError) and hasattr(resp, "code")
                  and resp.code() == grpc.StatusCode.RESOURCE_EXHAUSTED):
                # etcd is fine; one response was too big to receive. A (paged) snapshot
                # and its difference replace the events it held.
                self._observe(True, None)
                callback(TooLarge(f"watch {prefix}: {describe(resp)} (etcd {self.where})"))
            elif isinstance(resp, BaseException):
                self._fail_endpoint(client)
                error = StoreUnavailable(f"watch {prefix}: {describe(resp)} (etcd {self.where})")
                self._observe(False, error)
                callback(error)
            else:
                events = tuple(_event(e) for e in resp.events)
                rev = max(e.revision for e in events) if events else resp.header.revision
                self._observe(True, None)
                callback(WatchBatch(events, rev))

        with self._call(f"watch {prefix}") as c:
            watch_id = c.add_watch_prefix_callback(
                prefix, on_response, start_revision=start_revision, progress_notify=True)

        def cancel() -> None:
            try:
                client.cancel_watch(watch_id)
            except Exception:  # noqa: BLE001 - the stream may already be gone
                pass

        return cancel

    def _fail_endpoint(self, client: Any) -> None:
        """A broken watch stream means the endpoint is gone; fail over to another."""
        try:
            client.endpoint_in_use.fail()
            client._clear_old_stubs()
        except Exception:  # noqa: BLE001 - best effort inside the library's state
            pass

    # authentication (its administration: `buoy.etcd.auth`) ------------------------------
    def check_credentials(self) -> None:
        """Connect now (authenticating when a user is set).

        A user/password etcd rejects raises StoreError (not StoreUnavailable, so it is
        not retried as an outage); an unreachable etcd raises StoreUnavailable.
        """
        try:
            self._get_client()
        except grpc.RpcError as exc:
            if exc.code() in _AUTH_REJECTED:
                raise StoreError(f"authenticate user={self.settings.user}: {describe(exc)}") from None
            raise StoreUnavailable(f"connect: {describe(exc)} (etcd {self.where})") from None
        except (etcd_exc.Etcd3Exception, ValueError) as exc:
            raise StoreUnavailable(f"connect: {type(exc).__name__} {exc} "
                                   f"(etcd {self.where})") from None

    def auth_rpc(self, what: str, method: str, request: Any) -> Any:
        """One call of etcd's Auth service (`buoy.etcd.auth` builds the requests)."""
        with self._call(what) as c:
            return getattr(c.authstub, method)(request, c.timeout, metadata=c.metadata)


def describe(exc: BaseException) -> str:
    """One line for a gRPC or client error (gRPC's own text spans several lines)."""
    if isinstance(exc, grpc.RpcError) and hasattr(exc, "code"):
        return f"{exc.code().name} {exc.details()}"
    return f"{type(exc).__name__} {exc}".splitlines()[0]


def _kv(kv: Any) -> KeyValue:
    return KeyValue(kv.key.decode(errors="replace"), bytes(kv.value), kv.mod_revision,
                    kv.create_revision, kv.lease, kv.version)


def _event(ev: Any) -> WatchEvent:
    kind: Literal["put", "delete"] = "delete" if type(ev).__name__ == "DeleteEvent" else "put"
    return WatchEvent(kind, ev.key.decode(errors="replace"), bytes(ev.value), ev.mod_revision,
                      ev.lease, ev.create_revision if kind == "put" else 0,
                      ev.version if kind == "put" else 0)
