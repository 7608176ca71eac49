"""The `labelwise` command: one typer app; each command group registers from its own module.

Errors are handled here once: any LabelwiseError a command raises becomes one line on stderr,
`error: <message>`, and the exit code the error carries (1 runtime failure, 2 usage or bad input;
see labelwise.errors); an OSError (a path that is a file, a full disk, no permission) one line and
exit 1. Click's own usage errors exit 2. Output piped into a reader that stops early (`| head`) ends
quietly with exit 1, as click and rich end their help and tables. Commands import heavy libraries inside.
"""

from __future__ import annotations

import os
import select
import sys
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _package_version
from typing import Any

import typer
from typer.core import TyperGroup

from model_repository.errors import EXIT_RUNTIME, LabelwiseError

from . import bench, classify, deploy, doctor, export, repo, results, serve, train, tune

__all__ = ["app", "main", "one_line"]


def one_line(exc: BaseException) -> str:
    """The error's message on one line (multi-line messages, e.g. pydantic's, are joined with '; ')."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return "; ".join(lines) or type(exc).__name__


def _stdout_closed() -> bool:
    """Whether stdout is a pipe whose reader has gone (poll answers POLLERR); False where stdout has no
    file descriptor (a test runner's buffer) or poll cannot say."""
    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(event & (select.POLLERR | select.POLLHUP) for _, event in poller.poll(0))
    except (AttributeError, OSError, ValueError):
        return False


class LabelwiseGroup(TyperGroup):
    """The root command group: turns a LabelwiseError from any command into one line and its exit code."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except LabelwiseError as exc:
            typer.echo(f"error: {one_line(exc)}", err=True)
            raise typer.Exit(exc.exit_code) from None
        except BrokenPipeError as exc:
            if not _stdout_closed():  # a socket, not our reader: one line, as any other OSError below
                typer.echo(f"error: {type(exc).__name__}: {one_line(exc)}", err=True)
                raise typer.Exit(EXIT_RUNTIME) from None
            # Output piped into a reader that stopped (`| head`): end quietly, exit 1, as click and rich
            # already do for help and tables; stdout goes to devnull so exit's flush does not fail again.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)
            raise typer.Exit(EXIT_RUNTIME) from None
        except OSError as exc:  # a path that is a file, a full disk, no permission: one line, exit 1
            typer.echo(f"error: {type(exc).__name__}: {one_line(exc)}", err=True)
            raise typer.Exit(EXIT_RUNTIME) from None


def _version() -> str:
    try:
        return _package_version("labelwise")
    except PackageNotFoundError:  # running from a checkout that was never pip-installed
        from labelwise import __version__

        return __version__


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"labelwise {_version()}")
        raise typer.Exit()


app = typer.Typer(
    name="labelwise",
    cls=LabelwiseGroup,
    help="Train, export, publish and serve text classifiers for many scenarios on one encoder.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    epilog="Exit codes: 0 success; 1 the command ran and failed; 2 bad usage or input. "
    "Environment variables an option reads are shown beside it as \\[env var: ...].",
)


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_print_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Train, export, publish and serve text classifiers for many scenarios on one encoder."""


for _module in (repo, train, tune, export, serve, deploy, bench, classify, doctor, results):
    _module.register(app)


def main() -> None:
    app(prog_name="labelwise")
