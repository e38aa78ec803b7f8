"""Torch checkpoints: ``{"format": "ptyfast-checkpoint", "state_dict", "manifest", ...}`` in one .pt file,
with the manifest also written as JSON beside it (``<name>.json``). Needs torch."""

from __future__ import annotations

from pathlib import Path

from ptyfast.errors import InputError
from ptyfast.io.atomic import atomic_path, write_text
from ptyfast.models import build_model
from ptyfast.models.manifest import Manifest

FORMAT = "ptyfast-checkpoint"


def save_checkpoint(path: str | Path, model, manifest: Manifest, **extra) -> Path:
    """Atomically write weights + manifest (+ optimiser/scheduler state etc. in ``extra``)."""
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    module = getattr(model, "module", model)  # unwrap DDP
    state = {k: v.detach().float().cpu() if v.is_floating_point() else v.cpu() for k, v in module.state_dict().items()}
    payload = {"format": FORMAT, "state_dict": state, "manifest": manifest.to_json(), **extra}
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    write_text(path.with_suffix(".json"), manifest.to_json())
    return path


def read_checkpoint(path: str | Path) -> dict:
    """The raw checkpoint dict; clear errors for missing, corrupt or foreign files."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise InputError(f"checkpoint {path} does not exist.")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        if "weights only" in str(exc).lower():  # torch's safe loader met a Python object outside its allow-list
            raise InputError(f"checkpoint {path} was refused as unsafe: it holds Python objects that would run "
                             "code when unpickled; ptyfast loads only plain tensors and values.") from None
        raise InputError(f"checkpoint {path} is corrupt or not a torch file ({type(exc).__name__}).") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise InputError(f"{path} is not a ptyfast checkpoint (no '{FORMAT}' marker).")
    return payload


def load_checkpoint(path: str | Path, *, architecture: str | None = None):
    """(model in eval mode, manifest) from a checkpoint. ``architecture`` guards against foreign weights."""
    payload = read_checkpoint(path)
    manifest = Manifest.from_json(payload["manifest"])
    if architecture is not None and manifest.architecture != architecture:
        raise InputError(
            f"checkpoint {path} holds a '{manifest.architecture}' model, not '{architecture}'."
        )
    model = build_model(manifest.architecture)
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError:
        raise InputError(
            f"checkpoint {path} does not fit the '{manifest.architecture}' architecture (layer shapes differ)."
        ) from None
    model.eval()
    return model, manifest
