"""etcd faults under the whole stack: a 3-node cluster losing members, a single etcd down.

Real etcd, real HAProxy (driven by `buoy listen`), `buoy register` on the real Docker
engine with busybox containers, `buoy announce` and `buoy dns` as processes.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cluster_helpers import FaultResult, cluster_faults, etcd_outage
from docker_helpers import docker_client, ensure_image, remove_test_containers

pytestmark = pytest.mark.docker


@pytest.fixture(scope="module")
def docker() -> Iterator[Any]:
    client = docker_client()
    ensure_image(client)
    yield client
    remove_test_containers(client)
    client.close()


def check_outage(r: FaultResult, down: float) -> None:
    detail = f"{r}"
    assert r.requests > 50 * down * 0.5 and r.failed == 0, detail
    assert r.exited == {}, detail  # no agent exited
    assert r.lost_count == 0 and not r.stale, detail
    assert r.facts["dns_failed"] == 0, detail  # DNS answered from its last index
    assert float(r.facts["back_s"]) <= 5 + 2, detail  # within one announce interval
    # No storm: every retry loop backs off to one attempt per 2-5 s, so even register
    # (a watch and two leases) stays far below 2 lines a second.
    for agent, lines in r.log_lines.items():
        assert lines <= 20 + 2 * down, (agent, detail)


def test_cluster_leader_then_member_killed_while_instances_churn(
        tmp_path: Path, docker: Any, prefix: str) -> None:
    r = cluster_faults(tmp_path, docker, prefix)
    detail = f"{r}"
    assert len(r.facts["killed"]) == 2, detail  # type: ignore[arg-type]
    assert r.requests > 300 and r.failed == 0, detail  # routing never dropped
    assert int(r.facts["started"]) >= 5 and not r.facts["bad_exits"], detail  # type: ignore[call-overload]
    assert r.lost_count == 0, detail  # every live announcer: announce, service and route
    assert not r.stale, detail  # every withdrawn one gone
    assert r.exited == {}, detail  # the agents carried on


def test_etcd_down_8s_routing_and_agents_carry_on(tmp_path: Path, docker: Any,
                                                 prefix: str) -> None:
    check_outage(etcd_outage(tmp_path, docker, prefix, down=8), 8)
