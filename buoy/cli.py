"""The `buoy` command line: one click group; each agent adds its own command."""

from __future__ import annotations

import sys

import click

from buoy import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="buoy")
def cli() -> None:
    """Service discovery for Docker, backed by etcd."""


def _register_commands() -> None:
    from announce.cli import announce
    from buoy.ls import ls

    cli.add_command(announce)
    cli.add_command(ls)
    for module, name in (("register.cli", "register"), ("listen.cli", "listen"),
                         ("skydns.cli", "dns"), ("buoy.up", "up"),
                         ("buoy.roles", "etcd_setup_roles")):
        try:
            mod = __import__(module, fromlist=[name])
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise
            continue
        cli.add_command(getattr(mod, name))


def main() -> None:
    """Entry point: only here are exit codes decided. Usage errors exit 2 in one line."""
    _register_commands()
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
