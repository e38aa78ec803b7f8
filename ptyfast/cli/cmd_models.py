"""``ptyfast models``: registered architectures (with parameter counts) and shipped weights."""

from __future__ import annotations

from ptyfast.cli.app import command, console


def _parameter_count(name: str) -> str:
    try:
        import torch  # noqa: F401
    except ModuleNotFoundError:
        return "—"
    from ptyfast.models import build_model, count_parameters

    return f"{count_parameters(build_model(name)):,}"


@command("models")
def models() -> None:
    """List the registered architectures and the shipped pre-trained weights."""
    from rich.table import Table

    from ptyfast.models import REGISTRY
    from ptyfast.models.pretrained import shipped_models

    arch = Table(title="Architectures", title_justify="left")
    for col in ("Name", "Parameters", "Description", "Paper"):
        arch.add_column(col, justify="right" if col == "Parameters" else "left")
    for name, entry in sorted(REGISTRY.items()):
        arch.add_row(name, _parameter_count(name), entry.description, entry.paper)
    console.print(arch)

    shipped = Table(title="Shipped weights", title_justify="left")
    for col in ("Name", "Files", "Manifest"):
        shipped.add_column(col)
    for name, source in shipped_models(include_missing=True):
        if source is None:
            shipped.add_row(name, "[yellow]not present yet[/]", "pass a checkpoint or ONNX path meanwhile")
        else:
            shipped.add_row(name, ", ".join(p.name for p in source.files), source.summary())
    console.print(shipped)
