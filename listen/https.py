"""The HTTPS side of a listener: which certificate each virtual host gets, and its redirect,
HSTS and ACME policy.

Certificates come from `--cert-dir` (`<vhost>.pem`, chain + key; it wins) and from etcd
(`/certs/<vhost>`, watched); bad ones are skipped and named in /healthz. The TlsDriver
brings HAProxy to them without a reload. The policy follows the routed services (and
`--acme-hosts` / `--acme-all`).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from buoy.etcd.keys import KeyError_, KeyLayout
from buoy.etcd.store import EtcdStore, KeyValue
from buoy.etcd.watch import Change, PrefixWatcher
from buoy.listen.acme_issuer import AcmeIssuer, AcmeSettings
from buoy.listen.acme_responder import ChallengeResponder
from buoy.listen.certs import (
    Bundle,
    CertError,
    CertificateRow,
    check_vhost,
    parse_bundle,
    parse_pem,
    parse_record,
)
from buoy.listen.config import ListenConfig
from buoy.listen.haproxy import MasterSocket
from buoy.listen.model import Routing
from buoy.listen.tls import TlsDriver, TlsPaths
from buoy.ops.health import Metric

log = logging.getLogger(__name__)

DIR_EVERY = 2.0  # seconds between looks at --cert-dir


def policy_maps(routing: Routing) -> tuple[dict[str, str], dict[str, str]]:
    """The redirect map (`<vhost> 1`) and the HSTS map (`<vhost> <max-age>`) of a routing."""
    redirect = {b.vhost: "1" for b in routing.http if b.vhost and b.https_redirect}
    hsts = {b.vhost: str(b.hsts) for b in routing.http if b.vhost and b.hsts is not None}
    return redirect, hsts


def acme_hosts(routing: Routing, config: ListenConfig) -> set[str]:
    """Routed virtual hosts that get their certificate through ACME."""
    routed = {b.vhost for b in routing.http if b.vhost}
    if config.acme_all:
        return routed
    asked = {b.vhost for b in routing.http if b.vhost and b.acme}
    return asked | (routed & set(config.acme_hosts))


class Https:
    """Owns the certificate sources, the TLS driver, the challenge responder and the issuer."""

    def __init__(self, config: ListenConfig, store: EtcdStore, keys: KeyLayout,
                 sock: MasterSocket, stop: threading.Event, wake: threading.Event) -> None:
        assert config.https_bind is not None
        self.config = config
        self.keys = keys
        self.paths = TlsPaths(config.tls_dir)
        self.driver = TlsDriver(self.paths, sock, config.default_cert)
        self.wake = wake
        self.watcher = PrefixWatcher(store, keys.certs_root, self._on_change, stop, quiet=True)
        self.responder = ChallengeResponder(config.acme_socket, store, keys)
        self._lock = threading.Lock()
        self._etcd: dict[str, Bundle] = {}
        self._etcd_errors: dict[str, str] = {}  # vhost → why its record is skipped
        self._changed = True
        self._parsed: dict[str, tuple[bytes, Bundle | str]] = {}  # key → (value, its parse)
        self._dir: dict[str, tuple[tuple[int, int], Bundle | str]] = {}
        self._dir_checked = 0.0
        self._sync_errors: list[str] = []
        self._map_errors: list[str] = []
        self.issuer: AcmeIssuer | None = None
        if config.acme_directory:
            self.issuer = AcmeIssuer(
                store, keys, AcmeSettings(config.acme_directory, config.acme_email,
                                          str(config.acme_ca) if config.acme_ca else None,
                                          config.acme_renew, config.listen_id),
                stop, self.etcd_bundle, self.watcher.synced.is_set)

    def template(self) -> dict[str, str]:
        """What the HAProxy template needs for the HTTPS frontend."""
        port = self.config.https_port
        return {"bind": str(self.config.https_bind), "port_suffix": "" if port == 443 else f":{port}",
                "default_cert": str(self.paths.default_cert), "crt_list": str(self.paths.crt_list),
                "redirect_map": str(self.paths.redirect_map), "hsts_map": str(self.paths.hsts_map),
                "acme_socket": str(self.config.acme_socket)}

    def prepare(self) -> None:
        """Before HAProxy starts: every file the HTTPS frontend names exists."""
        self.driver.prepare()

    def start(self) -> None:
        self.driver.abort_stale()
        self.responder.start()
        self.watcher.start()
        if self.issuer is not None:
            self.issuer.start()

    def close(self) -> None:
        self.responder.close()
        if self.issuer is not None:
            self.issuer.release()

    # sources ----------------------------------------------------------------------------
    def _on_change(self, changes: Sequence[Change], view: Mapping[str, KeyValue], revision: int,
                   resync: bool) -> None:
        bundles: dict[str, Bundle] = {}
        errors: dict[str, str] = {}
        parsed: dict[str, tuple[bytes, Bundle | str]] = {}
        for key, kv in view.items():
            old = self._parsed.get(key)  # only changed records are parsed again
            if old is not None and old[0] == kv.value:
                parsed[key] = old
            else:
                try:
                    vhost = self.keys.parse_cert_key(key)
                    parsed[key] = (kv.value, parse_record(vhost, kv.value))
                except (KeyError_, CertError) as exc:
                    parsed[key] = (kv.value, str(exc))
            item = parsed[key][1]
            if isinstance(item, Bundle):
                bundles[item.vhost] = item
            else:
                errors[key.removeprefix(self.keys.certs_root)] = item
        self._parsed = parsed  # the watcher's thread only
        with self._lock:
            for name, err in errors.items():
                if self._etcd_errors.get(name) != err:
                    log.error("certificate record skipped key=%s%s error=%s",
                              self.keys.certs_root, name, err)
            self._etcd, self._etcd_errors, self._changed = bundles, errors, True
        if self.issuer is not None:
            self.issuer.wake.set()
        self.wake.set()

    def etcd_bundle(self, vhost: str) -> Bundle | None:
        with self._lock:
            return self._etcd.get(vhost)

    def _scan_dir(self) -> bool:
        """Re-read changed files of --cert-dir; whether anything changed."""
        cert_dir = self.config.cert_dir
        if cert_dir is None:
            return False
        seen: dict[str, tuple[tuple[int, int], Bundle | str]] = {}
        try:
            entries = list(os.scandir(cert_dir))
        except OSError as exc:
            entries = []
            seen["(dir)"] = ((0, 0), f"{cert_dir}: {exc}")
        for entry in entries:
            if not entry.name.endswith(".pem") or not entry.is_file():
                continue
            name = entry.name.removesuffix(".pem").lower()
            st = entry.stat()
            stamp = (st.st_mtime_ns, st.st_size)
            old = self._dir.get(name)
            if old is not None and old[0] == stamp:
                seen[name] = old
                continue
            try:
                seen[name] = (stamp, parse_bundle(check_vhost(name), Path(entry.path).read_text(),
                                                  "dir"))
            except (CertError, OSError) as exc:
                log.error("certificate file skipped path=%s error=%s", entry.path, exc)
                seen[name] = (stamp, str(exc))
        changed = seen != self._dir
        self._dir = seen
        return changed

    def wanted(self) -> dict[str, Bundle]:
        with self._lock:
            out = dict(self._etcd)
        for _, item in self._dir.values():
            if isinstance(item, Bundle):
                out[item.vhost] = item
        return out

    # from the listen loop ----------------------------------------------------------------
    def tick(self) -> None:
        """Bring HAProxy's certificates up to date when a source changed."""
        now = time.monotonic()
        changed = False
        if now - self._dir_checked >= DIR_EVERY:
            self._dir_checked = now
            changed = self._scan_dir()
        with self._lock:
            changed, self._changed = changed or self._changed, False
        if changed or self._sync_errors:
            self._sync_errors = self.driver.sync(self.wanted())

    def routed(self, routing: Routing) -> None:
        """The routing just applied: its redirect and HSTS maps, its ACME hosts."""
        self._map_errors = self.driver.sync_maps(*policy_maps(routing))
        if self.issuer is not None:
            local = {n for n, (_, item) in self._dir.items() if isinstance(item, Bundle)}
            self.issuer.want(acme_hosts(routing, self.config) - local)

    # reporting ------------------------------------------------------------------------------
    def problems(self) -> list[str]:
        with self._lock:
            out = [f"certificate record skipped: {self.keys.certs_root}{n}: {e}"
                   for n, e in sorted(self._etcd_errors.items())]
        out += [f"certificate file skipped: {n}.pem: {item}"
                for n, (_, item) in sorted(self._dir.items()) if isinstance(item, str)]
        out += self._sync_errors + self._map_errors
        if self.issuer is not None:
            out += [f"acme {v}: {e}" for v, e in sorted(self.issuer.errors.items())]
        return out

    def metrics(self) -> list[Metric]:
        """Certificates served and skipped, the earliest expiry, ACME orders."""
        served = list(self.driver.served.values())
        out = [Metric("listen_certificates", "gauge", "Certificates served by virtual host.",
                      float(len(served))),
               Metric("listen_certificates_skipped", "gauge",
                      "Certificates not served: they failed the checks.",
                      float(sum(1 for r in self.certificates() if r.error and r.source != "acme"))),
               Metric("listen_certificate_install_failures_total", "counter",
                      "Certificate changes HAProxy's runtime API refused.",
                      float(self.driver.failures))]
        if served:
            out.append(Metric("listen_certificate_expiry_seconds", "gauge",
                              "Seconds until the first served certificate expires.",
                              min(b.not_after for b in served) - time.time()))
        if self.issuer is not None:
            out += [Metric("listen_acme_leader", "gauge", "1 while this listener issues.",
                           float(self.issuer.leader)),
                    Metric("listen_acme_orders_total", "counter", "ACME orders.",
                           float(self.issuer.issued), (("result", "ok"),)),
                    Metric("listen_acme_orders_total", "counter", "ACME orders.",
                           float(self.issuer.failed), (("result", "failed"),))]
        return out

    def certificates(self) -> list[CertificateRow]:
        """One row per served certificate (an ACME failure on its row), then the default,
        then the skipped ones."""
        acme_errors = dict(self.issuer.errors) if self.issuer is not None else {}
        rows = [CertificateRow(v, b.source, b.not_after, acme_errors.pop(v, None))
                for v, b in sorted(self.driver.served.items())]
        try:
            _, leaf = parse_pem(self.paths.default_cert.read_text(), "default")
            rows.append(CertificateRow("*", "default", leaf.not_valid_after_utc.timestamp(), None))
        except (CertError, OSError) as exc:
            rows.append(CertificateRow("*", "default", None, str(exc)))
        with self._lock:
            rows += [CertificateRow(n, "etcd", None, e) for n, e in sorted(self._etcd_errors.items())]
        rows += [CertificateRow(n, "dir", None, item)
                 for n, (_, item) in sorted(self._dir.items()) if isinstance(item, str)]
        rows += [CertificateRow(v, "acme", None, e) for v, e in sorted(acme_errors.items())]
        return rows

