"""supervisord run inside PID 1 of the buoy images (`buoy.ops.supervise` starts it).

`run_supervisord` runs supervisord's own loop in this process, with three changes made
from outside through supervisor's event hooks:

- every program is spawned at once (announce first), not after the first second of
  supervisord's poll loop;
- when the app exits or cannot start, supervisord is told to shut down (announce stops
  first) and the process's exit code becomes the app's (128+N for signal N);
- when announce or listen goes FATAL, supervisord shuts down with exit code 1.

Only os and sys are imported at the top; supervisor is imported without ssl and
_hashlib (`load_supervisor`), so OpenSSL never enters PID 1.
"""

from __future__ import annotations

import os
import sys
from typing import Any

APP = "app"
HELPERS = ("announce", "listen")
HELPER_FAILED = 1  # exit code when announce or listen could not be kept running


def wait_status_code(status: int) -> int:
    """A wait status as a shell would report it: the exit code, or 128+N for signal N (pure)."""
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return os.WEXITSTATUS(status) if os.WIFEXITED(status) else 1


def say(message: str) -> None:
    print(f"buoy supervise: {message}", file=sys.stderr, flush=True)


def load_supervisor() -> None:
    """Import supervisord without OpenSSL: nothing in it uses TLS (http.client, which its
    xmlrpc brings, does without `ssl`), and `hashlib` falls back to Python's own sha1 and
    md5 (used only for its HTTP server's passwords) without `_hashlib`. That keeps libssl
    and libcrypto (about 9 MB of RSS) out of every container."""
    for name in ("ssl", "_hashlib"):
        sys.modules.setdefault(name, None)  # type: ignore[arg-type]
    import supervisor.supervisord  # noqa: F401


def run_supervisord(config: str) -> int:
    """Run supervisord with `config` until it stops; the container's exit code."""
    load_supervisor()
    from supervisor import events, supervisord
    from supervisor.medusa import asyncore_25 as asyncore
    from supervisor.options import ServerOptions
    from supervisor.states import SupervisorStates

    outcome = {"code": 0}
    statuses: dict[str, int] = {}

    class Supervisor(supervisord.Supervisor):  # type: ignore[misc]
        def runforever(self) -> None:
            # run() clears every subscription just before this, so subscribe here.
            events.subscribe(events.ProcessStateEvent, self.on_state)
            waitpid = self.options.waitpid

            def keep_status() -> tuple[int, int]:  # the raw status: signals included
                pid, status = waitpid()
                process = self.options.pidhistory.get(pid) if pid else None
                if process is not None:
                    statuses[process.config.name] = status
                return pid, status

            self.options.waitpid = keep_status
            # Spawn now, not after the first second of polling; announce first (it is on the
            # path from `docker start` to routed), then the app, then listen.
            for group in sorted(self.process_groups.values(), reverse=True):
                group.transition()
            super().runforever()

        def on_state(self, event: Any) -> None:
            name = event.process.config.name
            if self.options.mood < SupervisorStates.RUNNING:
                return  # already stopping: these are the ordered stops
            if name == APP and isinstance(event, (events.ProcessStateExitedEvent,
                                                  events.ProcessStateFatalEvent)):
                status = statuses.get(APP)
                code = wait_status_code(status) if status is not None else 127
                say(f"app exited (exit code {code}): withdrawing and stopping the container")
                self.shutdown(code)
            elif name in HELPERS and isinstance(event, events.ProcessStateFatalEvent):
                say(f"{name} could not be kept running: stopping the container "
                    f"(exit code {HELPER_FAILED})")
                self.shutdown(HELPER_FAILED)

        def shutdown(self, code: int) -> None:
            outcome["code"] = code
            self.options.mood = SupervisorStates.SHUTDOWN

    first = True
    while True:
        options = ServerOptions()
        options.realize(["-n", "-c", config], doc=supervisord.__doc__)
        options.first, options.test = first, False
        try:
            Supervisor(options).main()
        except asyncore.ExitNow:
            pass
        options.close_httpservers()
        options.close_logger()
        first = False
        if options.mood < SupervisorStates.RESTARTING:  # not a SIGHUP reload
            return outcome["code"]
