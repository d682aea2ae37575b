"""One LeaseKeepAlive stream per store, shared by every lease it refreshes.

etcd's keep-alive is a bidirectional stream. Opening a new stream for every
refresh (what `etcd3`'s `refresh_lease` does) costs etcd about 1.5 times the CPU
of sending one request on a stream that stays open, so the store keeps one open
and sends a `LeaseKeepAliveRequest` per refresh on it, reading the answer's TTL
(0: etcd no longer knows the lease).

Refreshes are serialised (one request in flight, so each answer belongs to the
request before it). The stream is opened lazily, and opened again after it broke
(etcd restarted, the connection dropped, no answer within the client's timeout)
or when the client moved to another endpoint; a failure is raised to the caller,
whose retry policy decides when to try again. A broken stream fails its endpoint
over like any other call, so the next try goes to another endpoint.

Used by `buoy.etcd.store` only (the only place that talks gRPC to etcd).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from typing import Any

import etcd3.exceptions as etcd_exc
import grpc
from etcd3 import etcdrpc

_FAILED_ENDPOINT = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED,
                    grpc.StatusCode.INTERNAL)


class _Stream:
    """One open LeaseKeepAlive call: a request queue in, a reader thread out."""

    def __init__(self, client: Any) -> None:
        self.client = client
        stub = client.leasestub  # binds to the client's current endpoint
        self.endpoint = client.endpoint_in_use
        self.requests: queue.Queue[Any] = queue.Queue()
        self.responses: queue.Queue[Any] = queue.Queue()
        self.dead = False
        self.call = stub.LeaseKeepAlive(self._outgoing(), credentials=client.call_credentials,
                                        metadata=client.metadata)
        threading.Thread(target=self._read, name="lease-keepalive", daemon=True).start()

    def _outgoing(self) -> Iterator[Any]:
        while (request := self.requests.get()) is not None:
            yield request

    def _read(self) -> None:
        try:
            for response in self.call:
                self.responses.put(response)
            self.responses.put(etcd_exc.ConnectionFailedError())  # etcd ended the stream
        except grpc.RpcError as exc:
            self.responses.put(exc)
        finally:
            self.dead = True

    def usable_by(self, client: Any) -> bool:
        return not self.dead and self.client is client and self.endpoint is client.endpoint_in_use

    def close(self) -> None:
        self.dead = True
        self.requests.put(None)
        self.call.cancel()


class KeepAliveStream:
    """Refresh leases over one long-lived keep-alive stream (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._stream: _Stream | None = None
        self.opened = 0  # streams opened so far (1 while etcd stays up)

    def refresh(self, client: Any, lease_id: int, timeout: float | None) -> int:
        """Send one keep-alive for `lease_id`; its TTL, 0 when etcd no longer knows it.

        Raises grpc.RpcError or an etcd3 exception when the stream is broken or etcd
        does not answer within `timeout`; the stream is opened again on the next call.
        """
        with self._lock:
            stream = self._stream
            if stream is None or not stream.usable_by(client):
                if stream is not None:
                    stream.close()
                stream = self._stream = _Stream(client)
                self.opened += 1
            stream.requests.put(etcdrpc.LeaseKeepAliveRequest(ID=lease_id))
            while True:
                try:
                    answer = stream.responses.get(timeout=timeout)
                except queue.Empty:
                    self._broken(stream, fail_endpoint=True)
                    raise etcd_exc.ConnectionTimeoutError() from None
                if isinstance(answer, BaseException):
                    code = answer.code() if isinstance(answer, grpc.RpcError) else None
                    self._broken(stream, fail_endpoint=code in _FAILED_ENDPOINT
                                 or code is None)
                    raise answer
                if lease_id == answer.ID:
                    return int(answer.TTL)
                # an answer for another lease cannot follow a single request; skip it

    def _broken(self, stream: _Stream, *, fail_endpoint: bool) -> None:
        stream.close()
        self._stream = None
        if fail_endpoint:
            try:
                stream.endpoint.fail()
                stream.client._clear_old_stubs()
            except Exception:  # noqa: BLE001 - best effort inside the library's state
                pass

    def close(self) -> None:
        """Close the stream (the store is closing or dropping its client)."""
        stream, self._stream = self._stream, None
        if stream is not None:
            stream.close()
