"""register's metrics: its counters and gauges as buoy.ops.health Metrics (read at scrape time).

What they are read from is described here (`RegisterState`), so this module never imports
the agent that registers them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Protocol

from buoy.ops.health import Metric, loop_metrics, records

if TYPE_CHECKING:
    from buoy.etcd.keys import KeyLayout
    from buoy.etcd.lease import LeaseKeeper
    from buoy.etcd.store import KeyValue
    from buoy.etcd.watch import PrefixWatcher
    from buoy.register.owned import OwnedKeys


class RegisterState(Protocol):
    """What register's metrics read (the Register agent)."""

    @property
    def keys(self) -> KeyLayout: ...
    @property
    def keeper(self) -> LeaseKeeper: ...
    @property
    def label_keeper(self) -> LeaseKeeper: ...
    @property
    def owned(self) -> OwnedKeys: ...
    @property
    def announce_view(self) -> Mapping[str, KeyValue]: ...
    @property
    def containers(self) -> Mapping[str, object]: ...
    @property
    def refusals(self) -> int: ...
    @property
    def puts(self) -> int: ...
    @property
    def deletes(self) -> int: ...
    @property
    def reconciles(self) -> int: ...
    @property
    def watcher(self) -> PrefixWatcher: ...
    @property
    def own_watchers(self) -> Sequence[PrefixWatcher]: ...


def register_metrics(agent: RegisterState) -> list[Metric]:
    """register's counters and gauges, read at scrape time."""
    owned = agent.keeper.owned()
    services = sum(1 for k in owned if k.startswith(agent.keys.services_root))
    status = sum(1 for k in owned if k.startswith(agent.keys.status_root))

    def counter(name: str, text: str, value: int) -> Metric:
        return Metric(name, "counter", text, float(value))

    return [records("announce", len(agent.announce_view)), records("service", services),
            records("skydns", len(owned) - services - status), records("status", status),
            records("label_announce", len(agent.label_keeper.owned())),
            Metric("register_containers", "gauge", "Running containers on this host.",
                   float(len(agent.containers))),
            Metric("register_refused", "gauge", "Announces of this host's containers that "
                   "could not be mapped.", float(agent.refusals)),
            counter("register_puts", "Records written.", agent.puts),
            counter("register_deletes", "Records withdrawn.", agent.deletes),
            counter("register_reconciles", "Full reconciles with etcd.", agent.reconciles),
            counter("register_repairs", "Owned keys put back after someone else deleted them.",
                    agent.owned.repairs),
            *loop_metrics([agent.watcher, *agent.own_watchers],
                          [agent.keeper, agent.label_keeper])]
