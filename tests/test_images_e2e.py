"""The seeds' scenario end to end, in real containers built from images/.

One Docker network of the test's own holds etcd, a frontend (buoy/haproxy) routing
dev and sit, two (then three) web instances and a TCP db (buoy/base, each announcing
itself under supervisord). `buoy register --internal --network <it>` and `buoy dns`
run on this host. Set BUOY_E2E_REPORT=1 to write the figures into docs/benchmarks.md.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dns.resolver
import pytest
from agent_process import AgentProcess
from docker_helpers import RegisterProcess
from e2e_helpers import (
    BASE,
    DB_APP,
    DB_CLIENT,
    FRONTEND,
    WEB_APP,
    Scenario,
    build_etcd_image,
    build_images,
    http_get,
    try_get,
)
from etcd_server import free_port, wait_for

from buoy.etcd.dns_records import service_name
from buoy.etcd.keys import KeyLayout
from buoy.etcd.records import AnnouncePath
from buoy.etcd.settings import EtcdSettings
from buoy.etcd.store import EtcdStore

pytestmark = [pytest.mark.e2e, pytest.mark.docker]

WEB = AnnouncePath.parse("/internal/app1/dev/web/ghost.example")
SIT = AnnouncePath.parse("/internal/app1/sit/web")
DB = AnnouncePath.parse("/internal/app1/dev/db")
DRAIN = 2  # ANNOUNCE_DRAIN of the web instances; docker stop allows DRAIN + 13 s


@pytest.fixture(scope="session")
def images() -> tuple[float, bool]:
    """Build buoy/base and buoy/haproxy once per session; the build's seconds."""
    return build_images()


@pytest.fixture
def scenario(images: tuple[float, bool]) -> Iterator[Scenario]:
    sc = Scenario()
    try:
        build_etcd_image(sc.client)
        yield sc
    finally:
        sc.cleanup()


@pytest.mark.timeout(600)  # the first test to use `images` may build the base OS
def test_frontend_image_needs_listen_path(images: tuple[float, bool]) -> None:
    """buoy/haproxy without LISTEN_PATH stops at once with a message naming the setting."""
    sc = Scenario()
    try:
        c = sc.run("nolisten", FRONTEND)
        assert c.wait(timeout=60)["StatusCode"] == 2
        assert "LISTEN_PATH: nothing to run" in c.logs().decode()
    finally:
        sc.cleanup()


EXIT_3 = "import time, sys; time.sleep(1); sys.exit(3)"


@pytest.mark.timeout(600)
def test_app_exit_code_is_the_containers_and_on_failure_restarts_it(
        images: tuple[float, bool]) -> None:
    """The app exits 3: the container exits 3 (after announce stopped), `docker wait` sees it,
    and `--restart on-failure:2` starts it again twice."""
    sc = Scenario()
    sc.labels = {"buoy.e2e": sc.run_id}  # not buoy.test: other suites sweep those away
    env = {"ANNOUNCE_PATH": "/internal/app1/dev/web", "PORT": "8000", "TYPE": "HTTP",
           "BUOY_ETCD_ENDPOINTS": "http://127.0.0.1:1"}  # announce runs, etcd unreachable
    try:
        once = sc.run("exit3", BASE, command=["python3", "-c", EXIT_3], env=env)
        assert once.wait(timeout=60)["StatusCode"] == 3
        logs = once.logs().decode(errors="replace")
        assert "app exited (exit code 3): withdrawing and stopping the container" in logs
        assert logs.index("app exited (exit code 3)") < logs.index("announce stopped")

        again = sc.client.containers.run(
            BASE, ["python3", "-c", EXIT_3], detach=True, environment=env, labels=sc.labels,
            name=f"buoy-e2e-{sc.run_id}-restart", network=sc.network_name,
            restart_policy={"Name": "on-failure", "MaximumRetryCount": 2})
        sc.containers.append(again)

        def settled() -> dict[str, Any] | None:
            again.reload()
            state = again.attrs["State"]
            done = (again.attrs["RestartCount"] == 2 and not state["Running"]
                    and not state["Restarting"])
            return state if done else None

        state = wait_for(settled, 90, interval=0.2, what="two restarts, then stopped")
        assert state["ExitCode"] == 3
        assert again.logs().decode(errors="replace").count("app exited (exit code 3)") == 3
    except BaseException:
        print(sc.logs())
        raise
    finally:
        sc.cleanup()


def web_env(common: dict[str, str], path: AnnouncePath) -> dict[str, str]:
    return {**common, "ANNOUNCE_PATH": str(path), "PORT": "8000", "TYPE": "HTTP",
            "ANNOUNCE_DRAIN": str(DRAIN),
            # Each web instance's own listen is its db ambassador; its HTTP frontend
            # stays out of the app's way on loopback.
            "LISTEN_PATH": "/services/internal/app1/dev/db", "BUOY_HTTP_BIND": "127.0.0.1:8080"}


@pytest.mark.timeout(600)
def test_seed_scenario(scenario: Scenario, images: tuple[float, bool], prefix: str, tmp_path: Path) -> None:
    started = time.monotonic()
    sc = scenario
    keys = KeyLayout(prefix)
    etcd_c = sc.run("etcd", "buoy-e2e-etcd:latest", publish=2379, command=[
        "--name", "e2e", "--data-dir", "/tmp/etcd", "--listen-peer-urls", "http://127.0.0.1:2380",
        "--listen-client-urls", "http://0.0.0.0:2379",
        "--advertise-client-urls", f"http://buoy-e2e-{sc.run_id}-etcd:2379"])
    endpoint = f"http://127.0.0.1:{sc.published(etcd_c, 2379)}"
    store = EtcdStore(EtcdSettings.from_strings(endpoint, timeout=2.0))
    procs: list[Any] = []
    try:
        wait_for(lambda: _answers(store), 30, what="etcd container")
        register = RegisterProcess(tmp_path / "buoy.register.log", endpoint, prefix, "--internal",
                                   "--network", sc.network_name, "--host-ip", "127.0.0.1").start()
        procs.append(register)
        dns_port = free_port()
        dns_agent = AgentProcess(["dns", "--listen", f"127.0.0.1:{dns_port}", "--etcd-endpoints",
                                  endpoint, "--prefix", prefix], log_dir=tmp_path).start()
        procs.append(dns_agent)
        figures = _scenario(sc, store, keys, prefix, dns_port)
    except BaseException:
        print(sc.logs())
        for p in procs:
            print(f"--- {p.log_path}\n{p.log()[-3000:]}")
        raise
    finally:
        for p in procs:
            p.kill() if isinstance(p, RegisterProcess) else p.stop()
        store.close()
    figures["e2e (scenario, build excluded)"] = f"{time.monotonic() - started:.1f} s"
    seconds, reused = images
    figures["image build (images/build.sh, " + ("base OS image reused)" if reused else
                                                "debootstrap included)")] = f"{seconds:.1f} s"
    _report(figures)


def _scenario(sc: Scenario, store: EtcdStore, keys: KeyLayout, prefix: str,
              dns_port: int) -> dict[str, str]:
    common = {"BUOY_ETCD_ENDPOINTS": f"http://buoy-e2e-{sc.run_id}-etcd:2379", "BUOY_PREFIX": prefix}
    db = sc.run("db", BASE, command=["python3", "-c", DB_APP],
                env={**common, "ANNOUNCE_PATH": str(DB), "PORT": "5432", "TYPE": "TCP"})
    webs = [sc.run(f"web{i}", BASE, command=["python3", "-c", WEB_APP], env=web_env(common, WEB))
            for i in (1, 2)]
    sit = sc.run("sit", BASE, command=["python3", "-c", WEB_APP], env=web_env(common, SIT))
    front = sc.run("frontend", FRONTEND, publish=80, env={
        **common, "LISTEN_PATH": "/services/internal/app1/dev,/services/internal/app1/sit"})
    port = sc.published(front, 80)
    ids = [sc.instance_id(w) for w in webs]

    # Two web instances behind one virtual host, alternating.
    seen: set[str] = set()
    wait_for(lambda: _collect(port, "ghost.example", seen) >= set(ids), 90,
             what="both web instances routed")
    bodies = [http_get(port, "ghost.example")[1] for _ in range(6)]
    assert set(bodies) == set(ids), bodies

    # The sit environment, through the same frontend.
    sit_id = sc.instance_id(sit)
    wait_for(lambda: try_get(port, "web.sit.app1") == sit_id, 60, what="sit routed")

    # The db through the ambassador inside a web container.
    db_id = sc.instance_id(db)
    wait_for(lambda: _exec(webs[0], DB_CLIENT) == f"{db_id}:ping", 60, what="db via 127.0.0.1:5432")

    # DNS answers the service with the instances' addresses on the network.
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers, resolver.port, resolver.lifetime = ["127.0.0.1"], dns_port, 2.0
    name = service_name(WEB)
    expected = {sc.ip(w) for w in webs}
    wait_for(lambda: _a_records(resolver, name) == expected, 30, what=f"DNS A {name}")

    # Scale up: a third instance is routed (also alone, through its pin host).
    t0 = time.monotonic()
    web3 = sc.run("web3", BASE, command=["python3", "-c", WEB_APP], env=web_env(common, WEB))
    id3 = sc.instance_id(web3)
    announce_key = keys.announce_key(WEB, id3)
    announced: list[float] = []

    def routed() -> bool:
        if not announced and store.get(announce_key) is not None:
            announced.append(time.monotonic())
        return try_get(port, f"{id3}.ghost.example") == id3

    wait_for(routed, 60, interval=0.02, what="web3 routed")
    t_routed = time.monotonic()
    seen = set()
    wait_for(lambda: _collect(port, "ghost.example", seen) >= {*ids, id3}, 30, what="3 in rotation")

    # docker stop under load: withdrawn, drained, then stopped; no request fails.
    stop_took: list[float] = []

    def stop_web1() -> None:
        t = time.monotonic()
        webs[0].stop(timeout=DRAIN + 13)
        stop_took.append(time.monotonic() - t)

    failures, total = _requests_during(stop_web1, port)
    assert total > 10
    assert failures == [], failures[:5]
    assert store.get(keys.service_key(WEB, ids[0])) is None

    # docker kill: removed through the Docker events, long before any TTL.
    service_key = keys.service_key(WEB, ids[1])
    assert store.get(service_key) is not None
    t_kill = time.monotonic()
    webs[1].kill()
    wait_for(lambda: store.get(service_key) is None, 10, interval=0.01, what="killed removed")
    kill_removed = time.monotonic() - t_kill
    wait_for(lambda: _a_records(resolver, name) == {sc.ip(web3)}, 30, what="DNS after stop+kill")
    assert {http_get(port, "ghost.example")[1] for _ in range(4)} == {id3}

    return {
        "new instance: container start → routed": f"{(t_routed - t0) * 1000:.0f} ms",
        "new instance: announce key → routed": (f"{(t_routed - announced[0]) * 1000:.0f} ms"
                                                if announced else "n/a"),
        "failed requests during docker stop": f"{len(failures)} of {total}",
        "docker kill → removed from /services": f"{kill_removed * 1000:.0f} ms",
        f"docker stop duration (ANNOUNCE_DRAIN={DRAIN})": f"{stop_took[0]:.1f} s",
    }


def _answers(store: EtcdStore) -> bool:
    try:
        store.revision()
        return True
    except Exception:  # noqa: BLE001 - not up yet
        return False


def _collect(port: int, host: str, seen: set[str]) -> set[str]:
    body = try_get(port, host)
    if body:
        seen.add(body)
    return seen


def _exec(container: Any, script: str) -> str:
    code, out = container.exec_run(["python3", "-c", script])
    return out.decode(errors="replace").strip() if code == 0 else ""


def _a_records(resolver: Any, name: str) -> set[str]:
    try:
        return {r.address for r in resolver.resolve(name, "A")}
    except Exception:  # noqa: BLE001 - NXDOMAIN / timeout while converging
        return set()


def _requests_during(action: Any, port: int, limit: float = 20.0) -> tuple[list[str], int]:
    """Send requests one after another while `action` runs (at most `limit` s), and 1 s after."""
    failures: list[str] = []
    total = 0
    done = threading.Event()
    thread = threading.Thread(target=lambda: (action(), done.set()), daemon=True)
    deadline = time.monotonic() + limit
    thread.start()
    after: float | None = None
    while time.monotonic() < deadline:
        if done.is_set() and after is None:
            after = time.monotonic() + 1.0
        if after is not None and time.monotonic() > after:
            break
        total += 1
        try:
            status, body = http_get(port, "ghost.example")
            if status != 200:
                failures.append(f"{status} {body[:80]}")
        except OSError as exc:
            failures.append(repr(exc))
    thread.join(5)
    assert done.is_set(), "docker stop did not finish within the request loop's limit"
    return failures, total


NOTES = """Targets: convergence of a new instance < 1 s, 0 failed requests during docker stop,
kill → removed < 1 s. Container start → routed includes Docker's own start, supervisord's
and announce's Python start-up in the container (programs are spawned at once, not on
supervisord's first tick); announce key → routed is register + listen + HAProxy. Over
20 starts see the `e2e-start` section (bench/e2e_start.py). The stop ran under a sequential
request loop (a new connection per request) through the frontend; ANNOUNCE_DRAIN=2.
A first build, with debootstrap of the base OS, took 59.8 s on this machine (base OS
47 s, wheelhouse 6 s, buoy/base 7 s).

"""


def _report(figures: dict[str, str]) -> None:
    lines = ["| what | measured |", "|---|---|", *(f"| {k} | {v} |" for k, v in figures.items())]
    print("\n".join(["", "e2e figures:", *lines]))
    if os.environ.get("BUOY_E2E_REPORT") == "1":
        import sys

        sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
        from bench.report import write_section

        # write_section names the command from sys.argv: show the pytest run, not its path.
        saved = sys.argv
        sys.argv = [str(Path(__file__).resolve().parent.parent / "-m pytest"), "-s",
                    "tests/test_images_e2e.py", "(with BUOY_E2E_REPORT=1)"]
        try:
            write_section("e2e", "## e2e: the seeds' scenario in containers\n\n" + NOTES
                          + "\n".join(lines) + "\n")
        finally:
            sys.argv = saved
