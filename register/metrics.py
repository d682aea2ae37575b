"""register's metrics: its counters and gauges as buoy.health Metrics (read at scrape time)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from buoy.health import Metric, loop_metrics, records

if TYPE_CHECKING:
    from register.agent import Register


def register_metrics(agent: Register) -> list[Metric]:
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
