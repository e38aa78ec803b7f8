"""The Typer application object, the help layout every command shares, and shared option types.

Help is plain text (no rich markup), laid out by :class:`Command`: the options grouped in panels (the same
panel names in every command, :data:`PANELS`), every value shown by a metavar (``N``, ``PATH``,
``[auto|cpu|cuda]`` built from the enums of :mod:`ptyfast.choices`) rather than a Python type, arguments named
in capitals (``SCAN...``), renamed options' old names accepted but not shown, and defaults that are library
constants read from the library when a command runs (not copied here).
"""

from __future__ import annotations

import functools
import importlib
import os
import re
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperCommand

from ptyfast import __version__
from ptyfast.errors import InputError, PtyfastError

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
        except PtyfastError as exc:
            if os.environ.get("PTYFAST_DEBUG"):
                raise
            raise fail(str(exc), getattr(exc, "exit_code", 2)) from None
        except KeyboardInterrupt:  # in-process callers; the CLI's own SIGINT handler exits before this
            console_err.print("interrupted; partial outputs removed")
            raise typer.Exit(130) from None
        finally:
            remove_temporaries()

    return wrapper


# Help panels, in the order they are printed; each option names one with ``rich_help_panel=``. The same kind of
# option sits in the same panel in every command (tests/test_cli_help.py checks it).
INPUT = "Input"
SIMULATION = "Simulation"
DETECTOR = "Detector"
PROBE = "Probe"
MODEL = "Model"
TRAINING = "Training"
VALIDATION = "Validation"
STITCHING = "Stitching"
REFINEMENT = "Refinement"
BENCHMARK = "Benchmark"
EXPERIMENTS = "Experiments"
CHECKS = "Checks"
LIVE = "Live scans"
PERFORMANCE = "Performance"
OUTPUT = "Output"
PANELS = (INPUT, SIMULATION, DETECTOR, MODEL, TRAINING, VALIDATION, STITCHING, REFINEMENT, PROBE, BENCHMARK,
          EXPERIMENTS, CHECKS, LIVE, PERFORMANCE, OUTPUT)


def choices(enum, *, extra: tuple[str, ...] = (), drop: tuple[str, ...] = (), other: str = "",
            many: bool = False) -> str:
    """The metavar of an option that takes one of ``enum``'s values: ``[a|b|c]``, with ``extra`` values first
    (``auto``, where a command can choose at run time), ``drop``'s left out, ``other`` a placeholder for a
    free-form alternative (``[flat|random|PATH]``), ``many``: a comma-separated list (``[a|b],...``)."""
    values = [*extra, *(v for v in enum.values() if v not in drop)] + ([other] if other else [])
    return "[" + "|".join(values) + "]" + (",..." if many else "")


def _value_kind(param) -> str:
    """'int', 'float', 'path' or 'str': what an option or argument takes (for its default metavar)."""
    desc = getattr(param, "type_descriptor", None)  # typer ≥ 0.22
    annotation = getattr(desc, "annotation", None)
    if annotation is not None:
        while getattr(annotation, "__args__", None) and getattr(annotation, "__origin__", None) in (list, tuple):
            annotation = annotation.__args__[0]
        for kind, types in (("int", (int,)), ("float", (float,)), ("path", (Path,))):
            if isinstance(annotation, type) and issubclass(annotation, types) and annotation is not bool:
                return kind
        return "str"
    name = getattr(getattr(param, "type", None), "name", "")  # click-based typer
    return {"integer": "int", "integer range": "int", "float": "float", "float range": "float",
            "path": "path"}.get(name, "str")


_DEFAULT_METAVAR = {"int": "N", "float": "NUM", "path": "PATH", "str": "TEXT"}


def argument_name(param) -> str:
    """An argument as usage and help name it: its metavar or its name in capitals, ``...`` when it repeats."""
    name = param.metavar or param.name.upper()
    return name if param.nargs == 1 or name.endswith("...") else f"{name}..."


def plain_help(text: str | None) -> str | None:
    """A docstring as help text: Sphinx roles (``:func:`x```) and literal quotes (````x````) become plain
    words, a doubled percent sign a single one."""
    if text is None:
        return None
    text = re.sub(r":[a-z]+(?::[a-z]+)?:`~?([^`]+)`", r"\1", text)
    return text.replace("``", "").replace("%%", "%")


class Command(TyperCommand):
    """A command whose help groups its options in :data:`PANELS`, shows values by metavar, hides the old
    names in :attr:`renamed` (still accepted, for one release) and takes the defaults in
    :attr:`library_defaults` from the library when it parses its arguments (so that ``--help`` shows the
    library's value without the CLI importing it at start-up)."""

    TERM_WIDTH = 30  # widest name column; longer names put their help on the next line
    renamed: dict[str, str] = {}  # old option name → its new name
    library_defaults: dict[str, str] = {}  # parameter → "module:attribute" holding its default

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for param in self.params:
            if param.param_type_name == "option" and not param.metavar and not getattr(param, "is_flag", False):
                param.metavar = _DEFAULT_METAVAR[_value_kind(param)]

    def parse_args(self, ctx, args):
        for param in self.params:
            if param.name in self.library_defaults and param.default is None:
                module, _, attribute = self.library_defaults[param.name].partition(":")
                value = importlib.import_module(module)
                for part in attribute.split("."):
                    value = getattr(value, part)
                param.default = value
        return super().parse_args(ctx, args)

    def collect_usage_pieces(self, ctx) -> list[str]:
        pieces = [self.options_metavar] if self.options_metavar else []
        for param in self.get_params(ctx):
            if param.param_type_name == "argument":
                name = argument_name(param)
                if not param.required:
                    name = f"[{name[:-3]}]..." if name.endswith("...") else f"[{name}]"
                pieces.append(name)
        return pieces

    def help_record(self, param, ctx) -> tuple[str, str] | None:
        """The (names, help) row of ``param``: arguments by :func:`argument_name`, options without their old
        names."""
        if getattr(param, "hidden", False):
            return None
        if param.param_type_name == "argument":
            record = param.get_help_record(ctx)
            return None if record is None else (argument_name(param), record[1])
        opts = param.opts
        param.opts = [o for o in opts if o not in self.renamed]
        try:
            return param.get_help_record(ctx)
        finally:
            param.opts = opts

    def format_options(self, ctx, formatter) -> None:
        arguments, panels = [], {}
        for param in self.get_params(ctx):
            record = self.help_record(param, ctx)
            if record is None:
                continue
            if param.param_type_name == "argument":
                arguments.append(record)
            else:
                panels.setdefault(getattr(param, "rich_help_panel", None) or "Options", []).append(record)
        # one column width for every section (click sizes each on its own), so that the panels line up
        width = min(max((len(term) for rows in [arguments, *panels.values()] for term, _ in rows), default=0),
                    self.TERM_WIDTH)
        sections = [("Arguments", arguments)] if arguments else []
        order = {name: k for k, name in enumerate(PANELS)}
        sections += [(name, panels[name]) for name in sorted(panels, key=lambda n: order.get(n, len(order)))]
        for name, rows in sections:
            with formatter.section(name):
                formatter.write_dl([(term.ljust(width), text) for term, text in rows], col_max=self.TERM_WIDTH)


def command(name: str | None = None, *, renamed: dict[str, str] | None = None,
            library_defaults: dict[str, str] | None = None, **kw):
    """``@command("name")``: register a function on ``app`` with error handling and the shared help layout
    (:class:`Command`); its docstring, without Sphinx markup, is the help."""

    def deco(fn):
        cls = type(f"{fn.__name__}_command", (Command,),
                   {"renamed": dict(renamed or {}), "library_defaults": dict(library_defaults or {})})
        return app.command(name, cls=cls, help=plain_help(fn.__doc__), **kw)(handle_errors(fn))

    return deco


Frames = Annotated[Optional[str], typer.Option(
    "--frames", metavar="START:STOP[:STEP]", rich_help_panel=INPUT,
    help="Use these frames only (Python slice rules over frame indices, e.g. 0:258).")]
OutPath = Annotated[Path, typer.Option("-o", "--output", rich_help_panel=OUTPUT,
                                       help="Output file (written atomically).")]
AutoMask = Annotated[bool, typer.Option(
    "--auto-mask/--no-auto-mask", rich_help_panel=INPUT,
    help="Mask detector pixels that hold no photon counts (pinned at the dtype's maximum, negative markers, dead, "
         "hot, saturated, behind a beam stop), judged on 64 sampled frames; one line says how many and why.")]
Threads = Annotated[Optional[int], typer.Option(
    "--threads", min=0, rich_help_panel=PERFORMANCE,
    help="CPU threads for every library: torch, ONNX Runtime, scipy.fft, BLAS (0 or omitted: the cores this "
         "process may use).")]


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
