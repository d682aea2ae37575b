"""The `buoy` command line: one click group; each agent's command is imported on demand.

Commands load lazily so an agent pays only for its own imports: `buoy announce`
inside every container never loads the Docker SDK, Jinja2 or the DNS library.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from typing import Any

import click

from buoy import __version__

COMMANDS = {
    "announce": "buoy.announce.cli:announce",
    "register": "buoy.register.cli:register",
    "listen": "buoy.listen.cli:listen",
    "dns": "buoy.skydns.cli:dns",
    "up": "buoy.ops.up:up",
    "ls": "buoy.ls:ls",
    "etcd-setup-roles": "buoy.ops.roles:etcd_setup_roles",
    "supervise": "buoy.ops.supervise:supervise",
}


def _available(target: str) -> bool:
    module = target.split(":", 1)[0]
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


class LazyGroup(click.Group):
    """A group whose subcommands are imported only when they are used."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(name for name, target in COMMANDS.items() if _available(target))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None or not _available(target):
            return None
        module, attr = target.split(":", 1)
        command: Any = getattr(importlib.import_module(module), attr)
        return command  # type: ignore[no-any-return]


@click.group(cls=LazyGroup,
             context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="buoy")
def cli() -> None:
    """Service discovery for Docker, backed by etcd."""


def main() -> None:
    """Entry point: only here are exit codes decided. Usage errors exit 2 in one line."""
    try:
        rv = cli.main(standalone_mode=False)
    except click.UsageError as exc:
        click.echo(f"buoy: error: {exc.format_message()}", err=True)
        sys.exit(2)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        sys.exit(130)
    sys.exit(rv if isinstance(rv, int) else 0)
