"""Write one benchmark's section into docs/benchmarks.md (between its own markers)."""

from __future__ import annotations

import datetime
import os
import platform
import statistics
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

DOC = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"
HEADER = """# Benchmarks

Every figure here was written by a script in `bench/`, run with the command shown in
its section. Each section says on which machine and when it ran. Re-run a script to
refresh its section; the others are left as they are.
"""


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{platform.platform()}, {os.cpu_count()} cores ({cpu}), Python {platform.python_version()}"


def summary(values: Sequence[float], unit: str = "ms") -> str:
    """median, p99, min-max, n, formatted."""
    if not values:
        return "no samples"
    ordered = sorted(values)
    p99 = ordered[min(len(ordered) - 1, int(round(0.99 * (len(ordered) - 1))))]
    return (f"median {statistics.median(ordered):.1f} {unit}, p99 {p99:.1f} {unit}, "
            f"min {ordered[0]:.1f}, max {ordered[-1]:.1f} (n={len(ordered)})")


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def write_section(name: str, body: str) -> None:
    """Replace the section `name` of docs/benchmarks.md with `body` plus run facts."""
    start, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
    command = "python " + " ".join([os.path.relpath(sys.argv[0], DOC.parent.parent), *sys.argv[1:]])
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, cwd=DOC.parent.parent).stdout.strip() or "uncommitted"
    except OSError:
        rev = "unknown"
    facts = (f"*Machine:* {machine()}  \n*Date:* {datetime.date.today().isoformat()}  \n"
             f"*Command:* `{command}`  \n*Code:* {rev}\n")
    section = f"{start}\n{body.strip()}\n\n{facts}{end}"
    text = DOC.read_text() if DOC.exists() else HEADER
    if start in text and end in text:
        before, rest = text.split(start, 1)
        _, after = rest.split(end, 1)
        text = before + section + after
    else:
        text = text.rstrip() + "\n\n" + section + "\n"
    DOC.parent.mkdir(parents=True, exist_ok=True)
    tmp = DOC.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(DOC)
