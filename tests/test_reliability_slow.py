"""The 60 s etcd outage (slow): run with `BUOY_SLOW=1 python -m pytest -m slow`."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cluster_helpers import etcd_outage
from docker_helpers import docker_client, ensure_image, remove_test_containers
from test_reliability_faults import check_outage

pytestmark = [
    pytest.mark.slow, pytest.mark.docker,
    pytest.mark.skipif(os.environ.get("BUOY_SLOW") != "1", reason="slow: set BUOY_SLOW=1"),
]


@pytest.fixture(scope="module")
def docker() -> Iterator[Any]:
    client = docker_client()
    ensure_image(client)
    yield client
    remove_test_containers(client)
    client.close()


def test_etcd_down_60s_routing_and_agents_carry_on(tmp_path: Path, docker: Any,
                                                  prefix: str) -> None:
    check_outage(etcd_outage(tmp_path, docker, prefix, down=60), 60)
