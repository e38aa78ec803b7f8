"""The Typer application object and shared option types."""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape

from ptyfast import __version__
from ptyfast.errors import InputError

console = Console()
console_err = Console(stderr=True, soft_wrap=True)  # error messages stay one line (no wrapping)

app = typer.Typer(
    name="ptyfast",
    help="Fast neural-network ptychography reconstruction.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # help text is plain: "[phase]" in a help string must print, not vanish as markup
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


OUTPUT_PARAMETERS = ("output", "json_out")  # every command names its outputs so; everything else is read


def _paths_in(value) -> list[Path]:
    values = value if isinstance(value, (list, tuple)) else [value]
    return [Path(v) for v in values if isinstance(v, (str, Path)) and str(v) and os.path.exists(v)]


def guard_outputs(kwargs: dict) -> None:
    """Record every file or folder named by a non-output argument as an input, then refuse an output
    argument that is one of them (before any work; :func:`ptyfast.io.atomic.atomic_path` checks again at
    write time, derived names such as PNG previews included)."""
    from ptyfast.io.atomic import check_not_input, register_input, reset_inputs

    reset_inputs()
    for name, value in kwargs.items():
        if name not in OUTPUT_PARAMETERS:
            for p in _paths_in(value):
                register_input(p)
    for name in OUTPUT_PARAMETERS:
        for p in _paths_in(kwargs.get(name)):
            if p.is_file():
                check_not_input(p)


def fail(message: str, code: int) -> typer.Exit:
    """Print ``error: message`` as one line on stderr; return the Exit that ends the command with ``code``."""
    console_err.print(f"[bold red]error:[/] {escape(message)}", highlight=False)
    return typer.Exit(code)


def handle_errors(fn):
    """Known failures become one line on stderr: InputError → exit 2, a full disk (OutputError) → exit 1,
    Ctrl-C → 130 (SIGTERM/SIGHUP: :func:`ptyfast.cli.install_signal_handlers`); temporary outputs are removed
    on every path."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from ptyfast.io.atomic import remove_temporaries

        try:
            guard_outputs(kwargs)
            return fn(*args, **kwargs)
        except InputError as exc:
            if os.environ.get("PTYFAST_DEBUG"):
                raise
            raise fail(str(exc), getattr(exc, "exit_code", 2)) from None
        except KeyboardInterrupt:  # in-process callers; the CLI's own SIGINT handler exits before this
            console_err.print("interrupted; partial outputs removed")
            raise typer.Exit(130) from None
        finally:
            remove_temporaries()

    return wrapper


def command(name: str | None = None, **kw):
    """``@command("name")``: register a function on ``app`` with error handling."""

    def deco(fn):
        return app.command(name, **kw)(handle_errors(fn))

    return deco


Frames = Annotated[Optional[str], typer.Option(
    "--frames", help="Use frames START:STOP[:STEP] only (Python slice rules over frame indices, e.g. 0:258).")]
OutPath = Annotated[Path, typer.Option("-o", "--output", help="Output file (written atomically).")]
Seed = Annotated[int, typer.Option("--seed", help="Random seed.")]
AutoMask = Annotated[bool, typer.Option(
    "--auto-mask/--no-auto-mask",
    help="Mask detector pixels that hold no photon counts (pinned at the dtype's maximum, negative markers, dead, "
         "hot, saturated, behind a beam stop), judged on 64 sampled frames; one line says how many and why.")]


def note_auto_mask(scan) -> None:
    """Print the one line saying which detector pixels were masked on read, if any."""
    note = scan.meta.get("auto_mask_note")
    if note:
        console.print(f"  pixels: {escape(note)}", highlight=False)


def parse_list(text: str, *, kind: type = str, what: str = "value") -> tuple:
    """``"a,b,c"`` → tuple (ints when ``kind`` is int); raises :class:`InputError` on an unparsable item."""
    items = [t.strip() for t in str(text).split(",") if t.strip()]
    try:
        return tuple(kind(t) if kind is not str else t.lower() for t in items)
    except ValueError:
        raise InputError(f"could not read the {what} list '{text}'; give comma-separated values like 1,16,256.") from None
