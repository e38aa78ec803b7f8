"""Assertions shared by the CLI tests."""


def assert_one_line_error(result, fragment: str = "") -> None:
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    assert fragment in lines[0] and "Traceback" not in result.output
