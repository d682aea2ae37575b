"""The status page (pure): the status dict of listen/status.py as one HTML page with inline CSS
and JS and no external assets.

Every value is escaped here, in one place: virtual hosts, paths and instance IDs come from
etcd. The page refreshes itself: its script fetches the page again every 2 s (less often
when a fetch is slow) and swaps in the new <main> (parsed, never executed; the
Content-Security-Policy admits only this one script, by its hash). Without JavaScript a
<noscript> meta refresh reloads it every 5 s.
"""

from __future__ import annotations

import base64
import hashlib
import html
from collections.abc import Mapping, Sequence
from typing import Any

REFRESH_MS = 2000
NOSCRIPT_REFRESH = 5  # seconds
CERT_WARN_DAYS = 14

SCRIPT = """
(function () {
  var live = document.getElementById("live");
  function refresh() {
    var started = Date.now();
    fetch(location.pathname, {cache: "no-store"}).then(function (r) {
      if (!r.ok) { throw new Error("HTTP " + r.status); }
      return r.text();
    }).then(function (text) {
      var fresh = new DOMParser().parseFromString(text, "text/html").getElementById("status");
      var old = document.getElementById("status");
      if (fresh && old) { old.replaceWith(document.adoptNode(fresh)); }
      live.textContent = "live, refreshed " + new Date().toLocaleTimeString();
      live.className = "live";
    }).catch(function (err) {
      live.textContent = "listen does not answer (" + err.message + "), retrying";
      live.className = "stale";
    }).then(function () {
      // a page slow to fetch (thousands of instances) is asked for less often
      setTimeout(refresh, Math.max(REFRESH_MS, 10 * (Date.now() - started)));
    });
  }
  setTimeout(refresh, REFRESH_MS);
})();
""".replace("REFRESH_MS", str(REFRESH_MS))

CSP = ("default-src 'none'; style-src 'unsafe-inline'; connect-src 'self'; "
       f"script-src 'sha256-{base64.b64encode(hashlib.sha256(SCRIPT.encode()).digest()).decode()}'; "
       "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
HEADERS = {"Content-Security-Policy": CSP, "Cache-Control": "no-store",
           "X-Content-Type-Options": "nosniff"}

STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:0;color:#1d2330;background:#f4f6f9}
header{display:flex;gap:1em;align-items:baseline;padding:.8em 1.2em;background:#1d2330;color:#fff}
header h1{font-size:1.2em;margin:0}
main{padding:.5em 1.2em 2em}
h2{font-size:1.05em;margin:1.4em 0 .4em}
table{border-collapse:collapse;width:100%;background:#fff;box-shadow:0 1px 2px #0002}
th,td{text-align:left;padding:.3em .6em;border-bottom:1px solid #e3e7ee;vertical-align:top}
th{background:#eef1f6;font-weight:600}
tbody.service tr.head td{background:#f8f9fb;border-top:2px solid #cfd6e1}
code{font:12px ui-monospace,monospace}
.cards{display:flex;flex-wrap:wrap;gap:.8em}
.card{background:#fff;box-shadow:0 1px 2px #0002;padding:.6em .9em;min-width:14em}
.card b{display:block;font-size:.85em;color:#5b6475}
.badge{display:inline-block;padding:0 .5em;border-radius:3px;font-weight:600;font-size:.85em}
.UP,.ok{background:#d8f3dc;color:#1b6b2c}.DOWN,.bad,.unhealthy{background:#fbd9d9;color:#9b1c1c}
.DRAIN,.warn{background:#fff0c2;color:#805b00}.MAINT{background:#e4e7ec;color:#3e4756}
.UNKNOWN{background:#eadcf7;color:#5a2a86}
.live{color:#9fe0ae}.stale{color:#ffb4b4}
.muted{color:#6b7486}ul.problems{background:#fbd9d9;color:#9b1c1c;padding:.5em 2em;margin:.5em 0}
"""

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>buoy listen {listen_id}</title>
<noscript><meta http-equiv="refresh" content="{noscript_refresh}"></noscript>
<style>{style}</style>
</head>
<body>
<header><h1>buoy listen <code>{listen_id}</code></h1>
<span id="live" class="muted">refreshes every {refresh_s:g} s</span></header>
{main}
<script>{script}</script>
</body>
</html>
"""


def h(value: object) -> str:
    """Escaped text (attribute-safe); None shows as an empty cell."""
    return "" if value is None else html.escape(str(value), quote=True)


def render(status: Mapping[str, Any]) -> str:
    """The whole page for one status dict (listen.status.build)."""
    return PAGE.format(listen_id=h(status["listen_id"]), noscript_refresh=NOSCRIPT_REFRESH,
                       style=STYLE, refresh_s=REFRESH_MS / 1000, main=render_main(status),
                       script=SCRIPT)


def render_main(s: Mapping[str, Any]) -> str:
    parts = [f'<main id="status" data-status="{h(s["status"])}">',
             f'<p>Status <span class="badge {h(s["status"])}" id="overall">{h(s["status"])}</span>'
             f' <span class="muted">as of {h(s["time"])}</span></p>']
    if s["problems"]:
        parts.append('<ul class="problems">' + "".join(f"<li>{h(p)}</li>" for p in s["problems"])
                     + "</ul>")
    parts += [_cards(s), _services(s["services"], s["applied"]), _pins(s["pins"]),
              _certificates(s["certificates"]), _conflicts(s["refused"], s["conflicts"]),
              _holds(s["holds"]), "</main>"]
    return "\n".join(parts)


def _cards(s: Mapping[str, Any]) -> str:
    etcd = s["etcd"]
    etcd_text = (_badge("connected", "ok") if etcd["connected"] else _badge("failing", "bad"))
    reload = s["last_reload"]
    if reload is None:
        reload_text = '<span class="muted">none yet</span>'
    else:
        reload_text = (_badge("ok", "ok") if reload["ok"] else _badge("failed", "bad")) + \
            f' {h(reload["time"])}<br><span class="muted">{h(reload["message"])}</span>'
    hx = s["haproxy"]
    if not hx["serving"]:
        hx_text = _badge("not serving", "bad") + f'<br><span class="muted">{h(hx["problem"])}</span>'
    elif hx["state_error"]:
        hx_text = _badge("state unknown", "warn") + \
            f'<br><span class="muted">{h(hx["state_error"])}</span>'
    else:
        hx_text = _badge("serving", "ok")
    last_error = s["last_error"]
    errors = f'{h(s["errors"])}' + ("" if last_error is None else
                                    f'<br><span class="muted">{h(last_error["time"])}: '
                                    f'{h(last_error["message"])}</span>')
    records = s["records"]
    cards = [("etcd", f'{etcd_text} since {h(etcd["since"])}<br>revision '
                      f'<code id="revision">{h(etcd["revision"])}</code>'),
             ("Last reload", reload_text), ("HAProxy", hx_text),
             ("Records", f'{h(records["valid"])} valid, {h(records["malformed"])} malformed'),
             ("Errors", errors)]
    return '<div class="cards">' + "".join(
        f'<div class="card" id="card-{h(title.lower().replace(" ", "-"))}"><b>{h(title)}</b>'
        f'{body}</div>' for title, body in cards) + "</div>"


def _services(services: Sequence[Mapping[str, Any]], applied: bool) -> str:
    head = (f"<h2>Services ({len(services)})</h2>")
    if not services:
        note = "nothing routed" if applied else "nothing applied yet"
        return head + f'<p class="muted">{note}</p>'
    rows = []
    for svc in services:
        live = [i for i in svc["instances"] if not i["withdrawn"]]
        check = f' check <code>GET {h(svc["check"])}</code>' if svc["check"] else ""
        up = _badge(f'{svc["up"]}/{len(live)} up', _health(svc["up"], len(live)))
        rows.append(
            f'<tbody class="service" data-path="{h(svc["path"])}" data-routed="{h(svc["routed"])}">'
            f'<tr class="head"><td colspan="2"><strong>{h(svc["routed"])}</strong>'
            f' <span class="muted">{h(svc["mode"].upper())}</span></td>'
            f'<td colspan="5"><code>{h(svc["path"])}</code>{check}</td>'
            f'<td colspan="2">{up}</td></tr>')
        if not svc["instances"]:
            rows.append('<tr><td colspan="9" class="muted">no instances</td></tr>')
        for i in svc["instances"]:
            withdrawn = ' <span class="muted">(withdrawn)</span>' if i["withdrawn"] else ""
            rows.append(
                f'<tr class="instance" data-instance="{h(i["id"])}" data-state="{h(i["state"])}">'
                f'<td><code>{h(i["id"])}</code>{withdrawn}</td><td><code>{h(i["address"])}</code></td>'
                f'<td>{_badge(i["state"], i["state"])}</td><td>{h(i["status"])}</td>'
                f'<td>{h(i["weight"])}</td><td>{h(i["slot"])}</td><td>{h(i["check"])}</td>'
                f'<td>{h(_ago(i["since"]))}</td><td>{h(i["sessions"])}</td></tr>')
        rows.append("</tbody>")
    return head + _table(["Instance", "Address", "State", "HAProxy status", "Weight", "Slot",
                          "Check", "Since", "Conns"], "".join(rows))


def _pins(pins: Sequence[Mapping[str, Any]]) -> str:
    return f"<h2>Pins ({len(pins)})</h2>" + _simple(
        ["Host", "Instance address"], [[f"<code>{h(p['host'])}</code>", h(p["address"])]
                                       for p in pins], empty="no pinned hosts")


def _certificates(certs: Sequence[Mapping[str, Any]]) -> str:
    rows = []
    for c in certs:
        days = c["days_left"]
        if days is None:
            left = ""
        elif days < 0:
            left = _badge(f"expired {-days} days ago", "bad")
        else:
            left = _badge(f"{days} days", "warn" if days < CERT_WARN_DAYS else "ok")
        error = _badge(c["error"], "bad") if c["error"] else ""
        rows.append([f"<code>{h(c['vhost'])}</code>", h(c["source"]), h(c["not_after"]), left,
                     error])
    return f"<h2>Certificates ({len(certs)})</h2>" + _simple(
        ["Virtual host", "Source", "Not after", "Left", "Error"], rows,
        empty="no certificates served")


def _conflicts(refused: Sequence[str], conflicts: Sequence[str]) -> str:
    items = [f'<li class="refused">{h(c)}</li>' for c in conflicts] or \
            [f'<li class="refused"><code>{h(p)}</code> is not routed</li>' for p in refused]
    body = f'<ul id="conflicts">{"".join(items)}</ul>' if items else \
        '<p class="muted">no names refused</p>'
    return f"<h2>Conflicts and refusals ({len(items)})</h2>" + body


def _holds(holds: Sequence[Mapping[str, Any]]) -> str:
    rows = [[f"<code>{h(x['backend'])}</code>", f"{h(x['servers_applied'])} → {h(x['servers_wanted'])}",
             f"{h(x['held_for'])} s", f"{h(x['applies_in'])} s"] for x in holds]
    return f"<h2>Mass-removal holds ({len(holds)})</h2>" + _simple(
        ["Backend", "Servers applied → wanted", "Held for", "Applies in"], rows,
        empty="no removal held")


def _table(columns: Sequence[str], body: str) -> str:
    """A table of already rendered rows."""
    head = "<tr>" + "".join(f"<th>{h(c)}</th>" for c in columns) + "</tr>"
    return f"<table><thead>{head}</thead>{body}</table>"


def _simple(columns: Sequence[str], rows: Sequence[Sequence[str]], empty: str) -> str:
    """A table of already escaped cells, or `empty` without rows."""
    if not rows:
        return f'<p class="muted">{h(empty)}</p>'
    return _table(columns, "<tbody>" + "".join(
        "<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
        + "</tbody>")


def _health(up: int, total: int) -> str:
    return "ok" if up == total and total else "bad" if not up else "warn"


def _badge(text: object, kind: object) -> str:
    return f'<span class="badge {h(kind)}">{h(text)}</span>'


def _ago(seconds: int | None) -> str:
    if seconds is None:
        return ""
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    if seconds < 172800:
        return f"{seconds // 3600} h"
    return f"{seconds // 86400} d"
