"""The package: `buoy` is the only top-level name, and imports flow one way.

The wheel is built from a copy of the tracked files (so no stale build directory of
the working tree can leak in), installed into a fresh directory and imported from there.
"""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
AGENTS = ("announce", "register", "listen", "skydns")


def _modules(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*.py") if "__pycache__" not in p.parts)


def _imports(path: Path) -> set[str]:
    """Absolute module names imported by one file (top of the file and inside functions)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def _buoy_imports(path: Path) -> set[str]:
    return {n for n in _imports(path) if n == "buoy" or n.startswith("buoy.")}


def test_agents_are_imported_through_buoy_only() -> None:
    folders = [ROOT / "buoy", ROOT / "tests", ROOT / "bench", *(ROOT / a for a in AGENTS)]
    offenders = [f"{p.relative_to(ROOT)}: {n}" for folder in folders for p in _modules(folder)
                 for n in _imports(p) if n.split(".")[0] in AGENTS]
    assert offenders == []


def test_the_etcd_contract_imports_nothing_else_of_buoy() -> None:
    offenders = [f"{p.name}: {n}" for p in _modules(ROOT / "buoy" / "etcd")
                 for n in _buoy_imports(p) if not n.startswith("buoy.etcd")]
    assert offenders == []


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[0] in AGENTS:
        parts.insert(0, "buoy")
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_no_module_import_loops() -> None:
    """Imports flow one way: command line -> agents -> buoy.ops -> buoy.etcd, no loops
    between modules (lazy imports inside functions included)."""
    files = [p for folder in (ROOT / "buoy", *(ROOT / a for a in AGENTS))
             for p in _modules(folder) if not (folder.name == "buoy" and p.parent.is_symlink())]
    known = {_module_name(p) for p in files}
    graph: dict[str, set[str]] = {}
    for p in files:
        targets = set()
        for name in _buoy_imports(p):
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name and name not in ("buoy", _module_name(p)):
                targets.add(name)
        graph[_module_name(p)] = targets
    done: set[str] = set()

    def visit(node: str, trail: tuple[str, ...]) -> None:
        assert node not in trail, " -> ".join((*trail[trail.index(node):], node))
        if node in done:
            return
        for target in sorted(graph.get(node, ())):
            visit(target, (*trail, node))
        done.add(node)

    for node in sorted(graph):
        visit(node, ())
    assert "buoy.listen.agent" in graph and "buoy.etcd.store" in graph


@pytest.mark.parametrize("agent", AGENTS)
def test_an_agent_never_imports_another(agent: str) -> None:
    others = {f"buoy.{a}" for a in AGENTS if a != agent}
    offenders = [f"{p.name}: {n}" for p in _modules(ROOT / agent)
                 for n in _buoy_imports(p) if ".".join(n.split(".")[:2]) in others]
    assert offenders == []


def _tracked_copy(dest: Path) -> Path:
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, check=True,
                           capture_output=True).stdout.decode().split("\0")
    src = dest / "src"
    for name in filter(None, files):
        target = src / name
        target.parent.mkdir(parents=True, exist_ok=True)
        origin = ROOT / name
        if origin.is_symlink():
            target.symlink_to(os.readlink(origin))
        elif origin.is_file():
            shutil.copy2(origin, target)
    return src


@pytest.mark.skipif(not (ROOT / ".git").exists(), reason="needs the git checkout")
def test_the_wheel_installs_buoy_as_its_only_top_level_name(tmp_path: Path) -> None:
    src = _tracked_copy(tmp_path)
    out = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                    "--disable-pip-version-check", "-w", str(out), str(src)],
                   check=True, capture_output=True, timeout=240)
    (wheel,) = out.glob("buoy-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        top_level = next(zf.read(n) for n in names if n.endswith(".dist-info/top_level.txt"))
    assert top_level.decode().split() == ["buoy"]
    assert {n.split("/")[0] for n in names} == {"buoy", wheel.name.split("-")[0] + "-"
                                                + wheel.name.split("-")[1] + ".dist-info"}
    for agent in AGENTS:
        assert f"buoy/{agent}/__init__.py" in names, agent
    assert "buoy/listen/templates/haproxy.cfg.j2" in names
    assert "buoy/etcd/store.py" in names and "buoy/ops/supervise.py" in names

    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                    "--disable-pip-version-check", "--target", str(target), str(wheel)],
                   check=True, capture_output=True, timeout=120)
    assert sorted(p.name for p in target.iterdir() if not p.name.endswith(".dist-info")
                  and p.name != "bin") == ["buoy"]
    probe = (
        "import importlib.util, buoy, buoy.listen.render as r, buoy.announce.main, buoy.skydns.server\n"
        "import buoy.register.agent, buoy.ops.supervise\n"
        f"assert buoy.__file__.startswith({str(target)!r}), buoy.__file__\n"
        "assert 'frontend' in r.default_template()\n"
        f"print(*[importlib.util.find_spec(a) is None for a in {AGENTS!r}])\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(target)
    done = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["True"] * len(AGENTS)
