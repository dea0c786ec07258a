"""The `spandrel-fdat` command line (click).

    spandrel-fdat autoload enable|disable|status [--site-dir DIR]
    spandrel-fdat comfyui-node PATH

`main` is the click group; new commands go on it (`@main.command()`). Every
error, click's usage errors included, is reported as one line on stderr with
exit status 2 and no traceback: commands raise click.ClickException, ValueError,
OSError or any other exception with a message that makes sense on its own.
"""

from __future__ import annotations

import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

import click

from . import __version__, autoload, comfyui

__all__ = ["main"]

PROG = "spandrel-fdat"
ERROR_EXIT = 2
_debug = False  # set by --debug: an error then prints its traceback before its line


def _set_debug(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    global _debug
    _debug = _debug or value


DEBUG = click.option(
    "--debug",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=_set_debug,
    help="On an error, print the Python traceback as well as the one-line message.",
)
"""`--debug`, on the group and on every command (`spandrel-fdat inspect X --debug`)."""


def _fail(message: str, prefix: str = PROG) -> NoReturn:
    line = " ".join(message.split())  # one line, whatever the message held
    click.echo(f"{prefix}: error: {line}", err=True)
    sys.exit(ERROR_EXIT)


class _OneLineErrors(click.Group):
    """A click group whose errors are one line on stderr, exit status 2."""

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        global _debug
        _debug = False
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, False, **extra)
        try:
            result = super().main(args, prog_name or PROG, complete_var, False, **extra)
        except click.UsageError as error:
            path = error.ctx.command_path if error.ctx is not None else PROG
            _fail(f"{error.format_message()} (see '{path} --help')", prefix=path)
        except click.ClickException as error:
            _fail(error.format_message())
        except click.Abort:
            _fail("aborted")
        except Exception as error:  # no traceback for the user, whatever went wrong, unless --debug
            if _debug:
                traceback.print_exc()
            message = str(error) or type(error).__name__
            if isinstance(error, OSError) and error.strerror:
                message = f"{error.filename}: {error.strerror}" if error.filename else error.strerror
            _fail(message)
        sys.exit(result if isinstance(result, int) else 0)


@click.group(cls=_OneLineErrors, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(version=__version__, prog_name=PROG, message="%(prog)s %(version)s")
@DEBUG
def main() -> None:
    """FDAT for spandrel: host integration (autoload, ComfyUI)."""


SITE_DIR = click.option(
    "--site-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="site-packages directory to use (default: this Python's, " + str(autoload.default_site_dir()) + ")",
)


@main.group("autoload")
def autoload_group() -> None:
    """Register FDAT whenever a program of this Python environment imports spandrel (opt-in)."""


def _describe(status: autoload.AutoloadStatus) -> list[str]:
    return [f"  start-up file: {status.pth_file}", f"  hook module:   {status.hook_file}"]


def _startup_note(status: autoload.AutoloadStatus) -> None:
    if not status.read_at_startup:
        click.echo(
            f"note: {status.site_dir} is not a site-packages directory of this Python ({sys.executable}); "
            "the hook runs only in interpreters that read it at start-up",
            err=True,
        )


@autoload_group.command("enable")
@SITE_DIR
def autoload_enable(site_dir: Path | None) -> None:
    """Install the start-up hook (idempotent)."""
    before = autoload.autoload_status(site_dir)
    autoload.enable_autoload(site_dir)
    after = autoload.autoload_status(site_dir)
    if before.state == "enabled":
        click.echo(f"autoload already enabled in {after.site_dir} (nothing changed)")
    else:
        click.echo(f"autoload enabled in {after.site_dir}")
    for line in _describe(after):
        click.echo(line)
    click.echo("FDAT is registered with spandrel as soon as a program using this environment imports spandrel.")
    _startup_note(after)


@autoload_group.command("disable")
@SITE_DIR
def autoload_disable(site_dir: Path | None) -> None:
    """Remove the start-up hook."""
    status = autoload.autoload_status(site_dir)
    if autoload.disable_autoload(site_dir):
        click.echo(f"autoload disabled in {status.site_dir}: removed its files")
        for line in _describe(status):
            click.echo(line)
    else:
        click.echo(f"autoload was not enabled in {status.site_dir} (nothing to remove)")


def _registered() -> bool:
    from spandrel import MAIN_REGISTRY

    from .arch import ARCH_ID, FDATArch

    present = MAIN_REGISTRY.get(ARCH_ID)
    return present is not None and isinstance(present.architecture, FDATArch)


@autoload_group.command("status")
@SITE_DIR
def autoload_status(site_dir: Path | None) -> None:
    """Show whether the start-up hook is installed."""
    status = autoload.autoload_status(site_dir)
    explanations = {
        "enabled": "enabled",
        "disabled": "disabled",
        "outdated": "enabled, hook from another spandrel-fdat version (run `spandrel-fdat autoload enable` to refresh)",
        "incomplete": "incomplete: one of its files is missing (run `enable` to repair or `disable` to clean up)",
        "conflict": "conflict: files of the same names were not written by spandrel-fdat: "
        + ", ".join(str(p) for p in status.foreign),
    }
    click.echo(f"autoload: {explanations[status.state]}")
    click.echo(f"  site-packages: {status.site_dir}")
    if status.state != "disabled":
        for line in _describe(status):
            click.echo(line)
    click.echo(f"  hook loaded in this interpreter: {'yes' if status.loaded else 'no'}")
    click.echo(f"  FDAT registered with spandrel in this interpreter: {'yes' if _registered() else 'no'}")
    _startup_note(status)


@main.command("comfyui-node")
@DEBUG
@click.argument("path", type=click.Path(path_type=Path))
def comfyui_node(path: Path) -> None:
    """Write a ComfyUI custom-node folder at PATH that registers FDAT at ComfyUI's start-up."""
    init = comfyui.write_comfyui_node(path)
    folder = init.parent
    click.echo(f"wrote {init}")
    click.echo(
        f"Copy or link {folder} into ComfyUI/custom_nodes/ and install spandrel-fdat into ComfyUI's Python; "
        "restart ComfyUI. It declares no nodes: 'Load Upscale Model' then loads FDAT checkpoints."
    )


if __name__ == "__main__":
    main()
