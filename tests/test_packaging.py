"""The package list in pyproject.toml is written by hand: every sub-package must be in it, or it would
silently not ship in a wheel."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_subpackage_ships():
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(cfg["packages"])
    mapped = {name: ROOT / folder for name, folder in cfg.get("package-dir", {}).items()}
    on_disk = {"ptyfast." + ".".join(p.parent.relative_to(ROOT / "ptyfast").parts)
               for p in (ROOT / "ptyfast").rglob("__init__.py") if p.parent != ROOT / "ptyfast"} | {"ptyfast"}
    for name, folder in mapped.items():
        on_disk |= {name + "".join("." + part for part in p.parent.relative_to(folder).parts)
                    for p in folder.rglob("__init__.py")}
    assert on_disk <= listed, f"not shipped: {sorted(on_disk - listed)}"
