"""Assertions shared by the CLI tests."""


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
