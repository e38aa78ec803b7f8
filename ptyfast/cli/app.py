"""The Typer application object and shared option types."""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from ptyfast import __version__

console = Console()
console_err = Console(stderr=True, soft_wrap=True)  # error messages stay one line (no wrapping)

app = typer.Typer(
    name="ptyfast",
    help="Fast neural-network ptychography reconstruction.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _version(value: bool) -> None:
    if value:
        console.print(f"ptyfast {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[Optional[bool], typer.Option("--version", callback=_version, is_eager=True,
                                                     help="Print the version and exit.")] = None,
) -> None:
    """Fast neural-network ptychography reconstruction."""


def handle_errors(fn):
    """Turn InputError (and unreadable-file errors) into one line on stderr and exit 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from ptyfast.errors import InputError

        try:
            return fn(*args, **kwargs)
        except InputError as exc:
            if os.environ.get("PTYFAST_DEBUG"):
                raise
            console_err.print(f"[bold red]error:[/] {exc}", highlight=False)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            console_err.print("interrupted")
            raise typer.Exit(130) from None

    return wrapper


def command(name: str | None = None, **kw):
    """``@command("name")``: register a function on ``app`` with error handling."""

    def deco(fn):
        return app.command(name, **kw)(handle_errors(fn))

    return deco


OutPath = Annotated[Path, typer.Option("-o", "--output", help="Output file (written atomically).")]
Seed = Annotated[int, typer.Option("--seed", help="Random seed.")]
