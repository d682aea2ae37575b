"""listen's metrics: its counters and gauges as buoy.ops.health Metrics (read at scrape time).

What they are read from is described here (`ListenState`), so this module never imports
the agent that registers them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

from buoy.ops.health import Metric, loop_metrics, records

if TYPE_CHECKING:
    from buoy.etcd.lease import LeaseKeeper
    from buoy.etcd.watch import PrefixWatcher
    from buoy.listen.apply import Applier
    from buoy.listen.guard import Guard
    from buoy.listen.haproxy import HAProxy


class ListenState(Protocol):
    """What listen's metrics read (the Listener)."""

    @property
    def applier(self) -> Applier: ...
    @property
    def counts(self) -> tuple[int, int]: ...
    @property
    def guard(self) -> Guard: ...
    @property
    def haproxy(self) -> HAProxy: ...
    @property
    def haproxy_down(self) -> str | None: ...
    @property
    def refused(self) -> tuple[str, ...]: ...
    @property
    def watchers(self) -> Sequence[PrefixWatcher]: ...
    @property
    def keeper(self) -> LeaseKeeper | None: ...


def listen_metrics(listener: ListenState) -> list[Metric]:
    """listen's counters and gauges, read at scrape time."""
    st, applied = listener.applier.stats, listener.applier.applied
    backends = applied.backends if applied is not None else ()
    valid, malformed = listener.counts

    def counter(name: str, text: str, value: int, result: str | None = None) -> Metric:
        labels = (("result", result),) if result else ()
        return Metric(name, "counter", text, float(value), labels)

    return [records("service", valid), records("malformed", malformed),
            Metric("listen_backends", "gauge", "Backends applied.", float(len(backends))),
            Metric("listen_servers", "gauge", "Servers applied.",
                   float(sum(len(b.servers) for b in backends))),
            counter("listen_renders", "Configs rendered.", st.renders),
            counter("listen_reloads", "HAProxy reloads.", st.reloads, "ok"),
            counter("listen_reloads", "HAProxy reloads.", st.reload_failures, "failed"),
            counter("listen_runtime_updates", "Runtime API server changes.",
                    st.runtime_ops - st.runtime_failures, "ok"),
            counter("listen_runtime_updates", "Runtime API server changes.",
                    st.runtime_failures, "failed"),
            counter("listen_drained_servers", "Withdrawn servers deleted after draining.",
                    st.removed),
            Metric("listen_held_backends", "gauge", "Backends whose mass removal is held.",
                   float(len(listener.guard.holds))),
            counter("listen_holds", "Mass removals held.", listener.guard.holds_total),
            counter("listen_haproxy_restarts", "HAProxy restarted after it died.",
                    listener.haproxy.restarts),
            Metric("listen_haproxy_up", "gauge", "1 while HAProxy serves.",
                   float(listener.haproxy_down is None)),
            Metric("listen_refused_services", "gauge",
                   "Services not routed: their virtual host or port belongs to another.",
                   float(len(listener.refused))),
            *loop_metrics(listener.watchers, [listener.keeper] if listener.keeper else [])]
