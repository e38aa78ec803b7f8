"""The CLI runner and the assertions shared by the CLI tests.

``runner.invoke(app, [...])`` (or :func:`invoke`) runs a command in-process with every command registered on
``app``: the one runner every CLI test uses.
"""

from typer.testing import CliRunner

from ptyfast.cli import _load_commands, app

_load_commands()
runner = CliRunner()


def invoke(*args, env=None):
    """Run ``ptyfast ARGS...`` in-process (arguments may be paths or numbers) and return the Typer result."""
    return runner.invoke(app, [str(a) for a in args], env=env)


def one_error_line(result, fragment: str = "", code: int = 2) -> str:
    """Assert that a command failed with ``code`` and exactly one non-empty stderr line, an ``error:``
    sentence containing ``fragment``, no traceback; return that line. ``result`` is a Typer ``CliRunner``
    result or a ``subprocess.CompletedProcess``."""
    got = result.exit_code if hasattr(result, "exit_code") else result.returncode
    out = result.output if hasattr(result, "output") else result.stdout + result.stderr
    assert got == code, out
    lines = [ln for ln in result.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    assert fragment in lines[0] and "Traceback" not in out, lines[0]
    return lines[0]


def assert_one_line_error(result, fragment: str = "") -> None:
    one_error_line(result, fragment)


__all__ = ["app", "assert_one_line_error", "invoke", "one_error_line", "runner"]
