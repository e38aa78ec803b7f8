"""Collect ``bench_*.py`` when the folder is run (``pytest benchmarks ...``).

pytest's default ``python_files`` (``test_*.py``) skips these files, which keeps them out of the plain test run
(``testpaths = ["tests"]``) but would also make ``pytest benchmarks -m gpu`` collect nothing. Files named on the
command line are collected by pytest itself, so they are left alone here (no duplicates).
"""

from __future__ import annotations

import pytest


def pytest_collect_file(file_path, parent):
    if file_path.suffix == ".py" and file_path.name.startswith("bench_") and not parent.session.isinitpath(file_path):
        return pytest.Module.from_parent(parent, path=file_path)
    return None
