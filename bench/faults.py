"""Fault runs with their counts: the 3-node cluster losing members and a 60 s etcd outage.

Writes the `faults` section of docs/benchmarks.md and prints the rows for
docs/reliability.md.

    python bench/faults.py [--outage 60] [--step 3]
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import tempfile
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# bench/dns.py would hide dnspython (`import dns`): keep bench/ off the path.
sys.path[:] = [str(ROOT), str(ROOT / "tests"),
               *(p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench")]

from cluster_helpers import FaultResult, cluster_faults, etcd_outage  # noqa: E402
from docker_helpers import docker_client, ensure_image, remove_test_containers  # noqa: E402

_spec = importlib.util.spec_from_file_location("report", ROOT / "bench" / "report.py")
assert _spec is not None and _spec.loader is not None
report = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(report)


def row(r: FaultResult) -> str:
    exited = ", ".join(r.exited) or "none"
    logs = max(r.log_lines.values()) if r.log_lines else "-"
    facts = ", ".join(f"{k}={v}" for k, v in r.facts.items())
    return (f"| {r.name} | {r.requests} | {r.failed} | {r.lost_count} | {len(r.stale)} | "
            f"{exited} | {logs} | {facts} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--outage", type=float, default=60.0, help="seconds etcd stays down")
    parser.add_argument("--step", type=float, default=3.0,
                        help="seconds of churn before and after each member kill")
    args = parser.parse_args()
    docker = docker_client()
    ensure_image(docker)
    results = []
    try:
        with tempfile.TemporaryDirectory(prefix="buoy-faults-") as work:
            for name, run in (("cluster", lambda w, p: cluster_faults(w, docker, p, args.step)),
                              ("outage", lambda w, p: etcd_outage(w, docker, p, args.outage))):
                path = Path(work) / name
                path.mkdir()
                results.append(run(path, f"/bench-faults-{uuid.uuid4().hex[:8]}"))
    finally:
        remove_test_containers(docker)
        docker.close()
    head = ("| run | requests sent | failed | registrations lost | stale left | agents exited "
            "| most log lines of one agent during the outage | details |\n"
            "|---|---|---|---|---|---|---|---|")
    rows = "\n".join(row(r) for r in results)
    body = ("Whole stack (register, listen with HAProxy, announce, dns as processes; busybox "
            "containers on the local Docker engine); a request loop through HAProxy counts "
            "every failed request.\n\n" + head + "\n" + rows)
    report.write_section("faults", body)
    print(head)
    print(rows)


if __name__ == "__main__":
    main()
