"""etcd with TLS, client certificates and user/password; `buoy etcd-setup-roles` and what each role may do.

One etcd per module serves on https with `--client-cert-auth`; its auth is enabled
once by `buoy etcd-setup-roles --enable-auth`. Each test then sets up its own roles
and users under its own key prefix (role names derive from the prefix).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from agent_process import AgentProcess
from etcd_server import EtcdServer, wait_for
from tls_helpers import ClientCert, Pki, make_pki

from buoy.etcd.auth import EtcdAuth
from buoy.etcd.keys import KeyLayout
from buoy.etcd.lease import LeaseKeeper
from buoy.etcd.records import AnnouncePath
from buoy.etcd.settings import EtcdSettings
from buoy.etcd.store import EtcdStore, StoreError, StoreUnavailable
from buoy.etcd.watch import PrefixWatcher
from buoy.ops.role_plan import plan_roles, prefix_range_end

ROOT_PASSWORD = "root-secret"
PATH = AnnouncePath.parse("/internal/app1/dev/web/ghost.example")
PASSWORDS = {"announce": "ann-pw", "register": "reg-pw", "listen": "lis-pw", "dns": "dns-pw"}


@dataclass
class SecureEtcd:
    server: EtcdServer
    pki: Pki
    client: ClientCert  # CN "client": no etcd user of that name, so it grants nothing alone

    def store(self, *, user: str | None = None, password: str | None = None,
              cert: ClientCert | None = None, with_cert: bool = True) -> EtcdStore:
        c = cert or self.client
        return EtcdStore(EtcdSettings.from_strings(
            self.server.endpoint, ca_cert=self.pki.ca, cert=c.cert if with_cert else None,
            key=c.key if with_cert else None, user=user, password=password, timeout=3))

    def root(self) -> EtcdStore:
        return self.store(user="root", password=ROOT_PASSWORD)

    def env(self, prefix: str, user: str | None = None, password: str | None = None) -> dict[str, str]:
        env = {"BUOY_ETCD_ENDPOINTS": self.server.endpoint, "BUOY_ETCD_CA": self.pki.ca,
               "BUOY_ETCD_CERT": self.client.cert, "BUOY_ETCD_KEY": self.client.key,
               "BUOY_PREFIX": prefix, "BUOY_ETCD_TIMEOUT": "3"}
        if user:
            env.update(BUOY_ETCD_USER=user, BUOY_ETCD_PASSWORD=password or "")
        return env


def start_tls_etcd(directory: Path) -> SecureEtcd:
    pki = make_pki(directory / "pki")
    server = EtcdServer(directory / "data", scheme="https", extra_args=pki.etcd_args()).start()
    secure = SecureEtcd(server, pki, pki.client("client"))
    probe = secure.store()

    def answers() -> bool:  # the https readiness check only waits for the port
        try:
            probe.revision()
            return True
        except StoreError:
            return False

    wait_for(answers, 20, what="etcd over TLS")
    probe.close()
    return secure


def setup_roles(secure: SecureEtcd, prefix: str, *args: str, user: str | None = "root",
                password: str = ROOT_PASSWORD, **env: str) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, **secure.env(prefix, user, password), **env}
    return subprocess.run([sys.executable, "-m", "buoy", "etcd-setup-roles", *args],
                          env=full_env, capture_output=True, text=True, timeout=60)


def role_prefix(prefix: str) -> str:
    return prefix.strip("/").lower() + "-"


def with_users(secure: SecureEtcd, prefix: str) -> dict[str, str]:
    """Roles and users for this test's prefix; returns agent -> user name."""
    env = {f"BUOY_{agent.upper()}_PASSWORD": pw for agent, pw in PASSWORDS.items()}
    done = setup_roles(secure, prefix, "--create-users", "--role-prefix", role_prefix(prefix), **env)
    assert done.returncode == 0, done.stderr
    return {agent: role_prefix(prefix) + agent for agent in PASSWORDS}


@pytest.fixture(scope="module")
def secure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureEtcd]:
    s = start_tls_etcd(tmp_path_factory.mktemp("tls"))
    done = setup_roles(s, "/module", "--enable-auth", user=None, BUOY_ROOT_PASSWORD=ROOT_PASSWORD)
    assert done.returncode == 0 and "auth: enabled" in done.stdout, done.stdout + done.stderr
    yield s
    s.server.stop()


def outcome(fn: Callable[[], object]) -> str:
    """`ok`, `denied` (permission denied) or the unexpected error."""
    try:
        fn()
        return "ok"
    except StoreError as exc:
        return "denied" if "permission denied" in str(exc) else f"error: {exc}"


# the plan (pure) --------------------------------------------------------------------------
def test_plan_gives_each_agent_only_its_prefixes() -> None:
    assert prefix_range_end("/p/announce/") == "/p/announce0"
    roles = {r.agent: r for r in plan_roles(KeyLayout("/p"), "x-")}
    assert [g.as_tuple() for g in roles["announce"].grants] == [
        ("readwrite", "/p/announce/", "/p/announce0")]
    assert {(g.perm, g.prefix) for g in roles["register"].grants} == {
        ("readwrite", "/p/announce/"), ("readwrite", "/p/services/"), ("readwrite", "/p/skydns/"),
        ("readwrite", "/p/status/")}
    assert {(g.perm, g.prefix) for g in roles["listen"].grants} == {
        ("read", "/p/services/"), ("readwrite", "/p/skydns/"), ("readwrite", "/p/certs/"),
        ("readwrite", "/p/acme/")}
    assert {(g.perm, g.prefix) for g in roles["dns"].grants} == {("read", "/p/skydns/")}
    quiet = {r.agent: r for r in plan_roles(KeyLayout(""), listen_advertises=False,
                                            register_labels=False)}
    assert [(g.perm, g.prefix) for g in quiet["listen"].grants] == [
        ("read", "/services/"), ("readwrite", "/certs/"), ("readwrite", "/acme/")]
    assert ("read", "/announce/") in {(g.perm, g.prefix) for g in quiet["register"].grants}
    assert quiet["announce"].name == "buoy-announce" == quiet["announce"].user


# TLS client path ----------------------------------------------------------------------------
def test_store_put_get_watch_lease_over_tls_with_password(secure: SecureEtcd, keys: KeyLayout) -> None:
    store = secure.root()
    stop = threading.Event()
    seen: list[tuple[str, str]] = []
    watcher = PrefixWatcher(store, keys.announce_root,
                            lambda changes, view, rev, resync: seen.extend(
                                (c.kind, c.key) for c in changes), stop)
    keeper = LeaseKeeper(store, 5, stop, interval=1, name="tls-test")
    try:
        key = keys.announce_key(PATH, "web1")
        store.put(key + "-plain", "v")
        assert store.get(key + "-plain") is not None
        watcher.start()
        wait_for(watcher.synced.is_set, 10, what="watch snapshot over TLS")
        keeper.set(key, "leased")
        keeper.start()
        kv = wait_for(lambda: store.get(key), 10, what="leased key")
        assert kv.lease != 0 and store.lease_ttl(kv.lease) > 0
        wait_for(lambda: ("put", key) in seen, 10, what="watch event over TLS")
        store.delete(key + "-plain")
        wait_for(lambda: ("delete", key + "-plain") in seen, 10, what="delete event over TLS")
        keeper.revoke()
        wait_for(lambda: store.get(key) is None, 10, what="revoke removes the key")
    finally:
        stop.set()
        store.close()


def test_announce_agent_over_tls_with_user_password(secure: SecureEtcd, prefix: str,
                                                    keys: KeyLayout, tmp_path: Path) -> None:
    users = with_users(secure, prefix)
    env = {**secure.env(prefix, users["announce"], PASSWORDS["announce"]),
           "ANNOUNCE_PATH": str(PATH), "PORT": "80", "TYPE": "HTTP", "ANNOUNCE_ID": "web1",
           "ANNOUNCE_TTL": "5", "ANNOUNCE_INTERVAL": "1"}
    agent = AgentProcess(["announce"], env, tmp_path).start()
    root = secure.root()
    key = keys.announce_key(PATH, "web1")
    try:
        kv = wait_for(lambda: root.get(key), 15, what="announce record over TLS")
        assert json.loads(kv.value)["ID"] == "web1" and kv.lease != 0
        agent.signal(signal.SIGTERM)
        assert agent.wait() == 0, agent.log()
        assert root.get(key) is None  # its role may revoke its own lease
    finally:
        agent.stop()
        root.close()


# roles -------------------------------------------------------------------------------------
def test_each_role_writes_only_where_it_may(secure: SecureEtcd, prefix: str, keys: KeyLayout) -> None:
    users = with_users(secure, prefix)
    targets = {"announce": keys.announce_key(PATH, "x1"), "services": keys.service_key(PATH, "x1"),
               "skydns": keys.skydns_key("x1.web.dev.app1.internal.buoy.internal"),
               "certs": keys.cert_key("web.example"), "acme": keys.acme_account_key}
    roots = {"announce": keys.announce_root, "services": keys.services_root,
             "skydns": keys.skydns_root, "certs": keys.certs_root, "acme": keys.acme_root}
    matrix: dict[str, dict[str, str]] = {}
    for agent, user in users.items():
        store = secure.store(user=user, password=PASSWORDS[agent])
        try:
            for kind, key in targets.items():
                row = matrix.setdefault(agent, {})
                row[f"write {kind}"] = outcome(lambda s=store, k=key: s.put(k, "{}"))
                row[f"read {kind}"] = outcome(lambda s=store, r=roots[kind]: s.get_prefix(r))
        finally:
            store.close()
    rw, r, no = ("ok", "ok"), ("denied", "ok"), ("denied", "denied")
    expected = {
        "announce": {"announce": rw, "services": no, "skydns": no, "certs": no, "acme": no},
        "register": {"announce": rw, "services": rw, "skydns": rw,  # rw /announce: labels
                     "certs": no, "acme": no},
        "listen": {"announce": no, "services": r, "skydns": rw, "certs": rw, "acme": rw},
        "dns": {"announce": no, "services": no, "skydns": r, "certs": no, "acme": no},
    }
    assert matrix == {agent: {f"{op} {kind}": res[i] for kind, res in row.items()
                              for i, op in enumerate(("write", "read"))}
                      for agent, row in expected.items()}


def test_container_credentials_cannot_write_services(secure: SecureEtcd, prefix: str,
                                                    keys: KeyLayout) -> None:
    users = with_users(secure, prefix)
    announcer = secure.store(user=users["announce"], password=PASSWORDS["announce"])
    root = secure.root()
    key = keys.service_key(PATH, "evil")
    try:
        lease = announcer.grant(5)
        for attempt in (lambda: announcer.put(key, "{}"), lambda: announcer.put(key, "{}", lease),
                        lambda: announcer.delete_prefix(keys.services_root)):
            with pytest.raises(StoreError, match="permission denied") as info:
                attempt()
            assert not isinstance(info.value, StoreUnavailable)  # refused, not retried
        assert root.get(key) is None
    finally:
        announcer.close()
        root.close()


def test_a_client_certificate_named_after_a_user_authenticates_as_it(
        secure: SecureEtcd, prefix: str, keys: KeyLayout) -> None:
    users = with_users(secure, prefix)
    store = secure.store(cert=secure.pki.client(users["announce"]))  # no password: the CN decides
    try:
        assert outcome(lambda: store.put(keys.announce_key(PATH, "c1"), "{}")) == "ok"
        assert outcome(lambda: store.put(keys.service_key(PATH, "c1"), "{}")) == "denied"
    finally:
        store.close()


def test_restricted_users_can_watch_their_prefixes(secure: SecureEtcd, prefix: str,
                                                   keys: KeyLayout) -> None:
    users = with_users(secure, prefix)
    register = secure.store(user=users["register"], password=PASSWORDS["register"])
    listen = secure.store(user=users["listen"], password=PASSWORDS["listen"])
    dns = secure.store(user=users["dns"], password=PASSWORDS["dns"])
    stop = threading.Event()
    watchers = {
        "listen": PrefixWatcher(listen, keys.services_watch_prefix("/services/internal/app1/dev"),
                                lambda *a: None, stop),
        "dns": PrefixWatcher(dns, keys.skydns_root, lambda *a: None, stop),
    }
    try:
        for w in watchers.values():
            w.start()
            wait_for(w.synced.is_set, 10, what="restricted snapshot")
        service_key = keys.service_key(PATH, "w1")
        dns_key = keys.skydns_key("w1.web.dev.app1.internal.buoy.internal")
        register.put(service_key, "{}")
        register.put(dns_key, "{}")
        wait_for(lambda: service_key in watchers["listen"].view, 10, what="listen user's watch")
        wait_for(lambda: dns_key in watchers["dns"].view, 10, what="dns user's watch")
    finally:
        stop.set()
        for s in (register, listen, dns):
            s.close()


# setup-roles: first run, idempotence, refusals ------------------------------------------------
def test_setup_roles_enables_auth_and_is_idempotent(tmp_path: Path, prefix: str,
                                                    keys: KeyLayout) -> None:
    secure = start_tls_etcd(tmp_path)
    try:
        refused = setup_roles(secure, prefix, "--enable-auth", user=None)
        assert refused.returncode == 2 and "BUOY_ROOT_PASSWORD" in refused.stderr
        assert EtcdAuth(secure.store()).roles() == []  # the refusal changed nothing

        args = ("--enable-auth", "--create-users")
        env = {"BUOY_ROOT_PASSWORD": ROOT_PASSWORD, "BUOY_ANNOUNCE_PASSWORD": "a-pw"}
        first = setup_roles(secure, prefix, *args, user=None, **env)
        assert first.returncode == 0, first.stderr
        for line in ("role buoy-announce: created", f"role buoy-announce: granted readwrite "
                     f"{keys.announce_root}", "user buoy-announce: created",
                     "user buoy-dns: skipped (no password given)", "user root: created",
                     "auth: enabled"):
            assert line in first.stdout

        anonymous = secure.store()  # a certificate whose CN is no user: nothing is allowed now
        assert outcome(lambda: anonymous.put(keys.announce_key(PATH, "a"), "{}")) == "denied"
        anonymous.close()

        second = setup_roles(secure, prefix, *args, **env)
        assert second.returncode == 0, second.stderr
        assert "created" not in second.stdout and "granted" not in second.stdout
        assert second.stdout.count(": unchanged") == 4 and "auth: already enabled" in second.stdout
        root = secure.root()
        plan = {spec.name: spec for spec in plan_roles(keys)}
        for name, spec in plan.items():
            assert sorted(EtcdAuth(root).role_permissions(name)) == sorted(g.as_tuple() for g in spec.grants)
        assert EtcdAuth(root).user_roles("buoy-announce") == ["buoy-announce"]
        root.close()
    finally:
        secure.server.stop()


def test_no_listen_advertise_with_prune_makes_listen_read_only(
        secure: SecureEtcd, prefix: str, keys: KeyLayout) -> None:
    users = with_users(secure, prefix)
    dns_key = keys.skydns_key("vhost.buoy.internal")
    listen = secure.store(user=users["listen"], password=PASSWORDS["listen"])
    try:
        assert outcome(lambda: listen.put(dns_key, "{}")) == "ok"
        kept = setup_roles(secure, prefix, "--role-prefix", role_prefix(prefix), "--no-listen-advertise")
        assert "WARNING also holds readwrite" in kept.stdout
        assert outcome(lambda: listen.put(dns_key, "{}")) == "ok"  # reported, left alone
        pruned = setup_roles(secure, prefix, "--role-prefix", role_prefix(prefix),
                             "--no-listen-advertise", "--prune")
        assert pruned.returncode == 0 and f"revoked readwrite on [{keys.skydns_root}" in pruned.stdout
        assert outcome(lambda: listen.put(dns_key, "{}")) == "denied"
        assert outcome(lambda: listen.get_prefix(keys.services_root)) == "ok"
    finally:
        listen.close()


def test_setup_roles_needs_root(secure: SecureEtcd, prefix: str) -> None:
    users = with_users(secure, prefix)
    done = setup_roles(secure, prefix, user=users["announce"], password=PASSWORDS["announce"])
    assert done.returncode == 1
    assert "permission denied" in done.stderr and "--etcd-user root" in done.stderr


# refusals: wrong password, no client certificate ----------------------------------------------
def test_wrong_password_is_a_clear_error(secure: SecureEtcd, prefix: str, keys: KeyLayout,
                                         tmp_path: Path) -> None:
    store = secure.store(user="root", password="wrong")
    with pytest.raises(StoreError, match="authentication failed") as info:
        store.check_credentials()
    assert not isinstance(info.value, StoreUnavailable)
    with pytest.raises(StoreError, match="authentication failed"):
        store.get(keys.announce_root)

    done = setup_roles(secure, prefix, password="wrong")
    assert done.returncode == 1 and "authentication failed" in done.stderr

    # An agent started with a password etcd rejects stops at once: exit 2, one line.
    env = {**secure.env(prefix, "root", "wrong"), "ANNOUNCE_PATH": str(PATH), "PORT": "80",
           "TYPE": "HTTP", "ANNOUNCE_ID": "web1"}
    agent = AgentProcess(["announce"], env, tmp_path).start()
    try:
        assert agent.wait(30) == 2
        lines = [ln for ln in agent.log().splitlines() if ln.strip()]
        assert lines[-1].startswith("buoy: error: BUOY_ETCD_PASSWORD:")
        assert "authentication failed" in lines[-1]
        assert secure.root().get(keys.announce_key(PATH, "web1")) is None
    finally:
        agent.stop()


def test_client_without_certificate_is_refused(secure: SecureEtcd, tmp_path: Path,
                                               keys: KeyLayout) -> None:
    key = keys.announce_key(PATH, "nocert")
    no_cert = secure.store(user="root", password=ROOT_PASSWORD, with_cert=False)
    foreign = make_pki(tmp_path / "other-ca", "other-ca").client("client")
    wrong_ca = secure.store(user="root", password=ROOT_PASSWORD, cert=foreign)
    try:
        for store in (no_cert, wrong_ca):
            with pytest.raises(StoreUnavailable):  # the TLS handshake fails: no request is served
                store.put(key, "{}")
        assert secure.root().get(key) is None
    finally:
        no_cert.close()
        wrong_ca.close()
