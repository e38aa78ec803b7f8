"""Where a model comes from: a shipped name or a path, resolved to its files and manifest.

``resolve_model("ptynet-s")`` finds the weights shipped in ``ptyfast/data`` (``ptynet-s.pt`` checkpoint,
``ptynet-s.json`` manifest, ``ptynet-s.onnx`` export); a path may name a ``.pt`` checkpoint, an ``.onnx``
file, a TensorRT ``.engine`` / ``.plan`` (with its ``.json`` sidecar) or a directory holding them.

Resolving never imports torch when a manifest JSON sits beside a checkpoint (as ``save_checkpoint`` writes
it) or the model is ONNX / an engine; the weights themselves are checked when they are loaded.
"""

from __future__ import annotations

import json
import os
import zipfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from ptyfast.errors import InputError
from ptyfast.models import REGISTRY
from ptyfast.models.manifest import Manifest

#: Registered names for which ptyfast ships (or will ship) pre-trained weights in ``ptyfast/data``.
SHIPPED: tuple[str, ...] = ("ptynet-s", "ptynet-s-probe-est")
#: The model used when none is named, for scans under the bundled probe (or with no probe)...
DEFAULT_MODEL = "ptynet-s"
#: ...and for scans under any other probe: the probe-conditioned model (``reconstruct`` picks; see
#: :func:`ptyfast.runtime.reconstruct.default_model_for`).
DEFAULT_CONDITIONED_MODEL = "ptynet-s-probe-est"

CHECKPOINT_SUFFIXES = (".pt", ".pth")
ONNX_SUFFIXES = (".onnx",)
ENGINE_SUFFIXES = (".engine", ".plan", ".trt")


@dataclass(frozen=True)
class ModelSource:
    """The files of one model and the manifest they share.

    Attributes
    ----------
    name : str
        Display name: the shipped name or the file stem.
    manifest : Manifest
        What the weights expect and produce.
    checkpoint : Path or None
        Torch checkpoint (``.pt``), needed to export or to run the torch backend.
    onnx : Path or None
        ONNX export (fp32), runnable by ONNX Runtime without torch.
    engine : Path or None
        TensorRT engine; its JSON sidecar is ``engine.with_suffix(".json")``.
    shipped : bool
        True for weights that come with ptyfast.
    """

    name: str
    manifest: Manifest
    checkpoint: Path | None = None
    onnx: Path | None = None
    engine: Path | None = None
    shipped: bool = False

    @property
    def files(self) -> list[Path]:
        """The files present, in the order checkpoint, ONNX, engine."""
        return [p for p in (self.checkpoint, self.onnx, self.engine) if p is not None]

    def summary(self) -> str:
        """One line: architecture, input size, probe, training summary."""
        m = self.manifest
        parts = [m.architecture, "x".join(map(str, m.input_size))]
        if m.probe_sha256:
            parts.append(f"probe {m.probe_sha256[:12]}")
        if m.pixel_size:
            parts.append(f"pixel {m.pixel_size:.3g} m")
        for key in ("steps", "epochs", "val_psnr", "val_loss", "data"):
            if key in m.training:
                parts.append(f"{key} {m.training[key]}")
        if m.finetuned_on:
            parts.append(f"fine-tuned on {m.finetuned_on}")
        return ", ".join(parts)


def cache_dir(*parts: str) -> Path:
    """ptyfast's cache folder (``$PTYFAST_CACHE`` or ``~/.cache/ptyfast``), created on demand.

    Parameters
    ----------
    *parts : str
        Sub-folders below the cache root.
    """
    root = Path(os.environ.get("PTYFAST_CACHE") or Path.home() / ".cache" / "ptyfast").expanduser()
    path = root.joinpath(*parts)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(
            f"cannot create the cache folder {path} ({exc.strerror}); set PTYFAST_CACHE to a writable folder."
        ) from None
    return path


def _data_file(name: str) -> Path | None:
    ref = resources.files("ptyfast.data").joinpath(name)
    try:
        with resources.as_file(ref) as path:
            return Path(path) if Path(path).is_file() else None
    except (FileNotFoundError, OSError):
        return None


def read_onnx_manifest(path: str | Path) -> Manifest:
    """The manifest stored in an ONNX file's ``metadata_props`` (key ``ptyfast.manifest``).

    Uses the ``onnx`` package when installed (reads the protobuf without external data), ONNX Runtime
    otherwise; neither imports torch.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"ONNX file {path} does not exist; check the path or export one with `ptyfast export`.")
    props: dict[str, str]
    try:
        import onnx

        try:
            proto = onnx.load(str(path), load_external_data=False)
        except Exception as exc:  # protobuf DecodeError and friends
            raise InputError(
                f"{path} is not a readable ONNX file ({type(exc).__name__}); re-export it with `ptyfast export`."
            ) from None
        props = {p.key: p.value for p in proto.metadata_props}
    except ModuleNotFoundError:
        try:
            import onnxruntime as ort
        except ModuleNotFoundError:
            raise InputError(
                "reading an ONNX model needs onnxruntime; install it: pip install 'ptyfast[cpu]'."
            ) from None
        try:
            sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        except Exception as exc:
            raise InputError(
                f"{path} is not a readable ONNX file ({type(exc).__name__}); re-export it with `ptyfast export`."
            ) from None
        props = dict(sess.get_modelmeta().custom_metadata_map)
    if "ptyfast.manifest" not in props:
        raise InputError(
            f"ONNX file {path} carries no ptyfast manifest in its metadata; export it with `ptyfast export`."
        )
    return Manifest.from_json(props["ptyfast.manifest"])


def _checkpoint_manifest(path: Path) -> Manifest:
    """Manifest of a checkpoint without loading its weights: the JSON beside it (torch-free) or, failing
    that, the one inside (needs torch). The weights themselves are checked when they are loaded."""
    if not zipfile.is_zipfile(path):
        raise InputError(f"checkpoint {path} is corrupt or not a torch file (not a zip archive); re-save it.")
    sidecar = path.with_suffix(".json")
    if sidecar.is_file():
        return Manifest.load(sidecar)
    try:
        import torch  # noqa: F401
    except ModuleNotFoundError:
        raise InputError(
            f"reading checkpoint {path} needs PyTorch (or its {sidecar.name} manifest beside it); "
            "install the train extra: pip install 'ptyfast[train]'."
        ) from None
    from ptyfast.models.checkpoint import read_checkpoint

    return Manifest.from_json(read_checkpoint(path)["manifest"])


def _engine_manifest(path: Path) -> Manifest:
    sidecar = path.with_suffix(".json")
    if not sidecar.is_file():
        raise InputError(
            f"TensorRT engine {path} has no {sidecar.name} sidecar; rebuild it with `ptyfast export --format tensorrt`."
        )
    try:
        payload = json.loads(sidecar.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise InputError(f"engine sidecar {sidecar} is not valid JSON; rebuild the engine with `ptyfast export`.") from None
    if not isinstance(payload, dict) or "manifest" not in payload:
        raise InputError(f"engine sidecar {sidecar} holds no manifest; rebuild the engine with `ptyfast export`.")
    return Manifest.from_dict(payload["manifest"])


def _check_architecture(manifest: Manifest, where: Path | str) -> Manifest:
    if manifest.architecture not in REGISTRY:
        raise InputError(
            f"{where} is a '{manifest.architecture}' model, which this ptyfast does not know; "
            f"known architectures are: {', '.join(sorted(REGISTRY))}."
        )
    return manifest


def _from_files(name: str, files: list[Path], *, shipped: bool = False) -> ModelSource:
    ckpt = next((p for p in files if p.suffix.lower() in CHECKPOINT_SUFFIXES), None)
    onnx_path = next((p for p in files if p.suffix.lower() in ONNX_SUFFIXES), None)
    engine = next((p for p in files if p.suffix.lower() in ENGINE_SUFFIXES), None)
    if ckpt is not None:
        manifest = _checkpoint_manifest(ckpt)
        where: Path = ckpt
    elif onnx_path is not None:
        manifest = read_onnx_manifest(onnx_path)
        where = onnx_path
    elif engine is not None:
        manifest = _engine_manifest(engine)
        where = engine
    else:  # pragma: no cover - callers pass at least one file
        raise InputError(f"no model files found for '{name}'.")
    return ModelSource(name, _check_architecture(manifest, where), ckpt, onnx_path, engine, shipped)


def _shipped(name: str) -> ModelSource:
    files = [p for p in (_data_file(f"{name}{s}") for s in (".pt", ".onnx")) if p is not None]
    if not files:
        raise InputError(
            f"the shipped '{name}' weights are not present yet in this installation (ptyfast/data/{name}.pt, "
            f"{name}.onnx); pass a checkpoint or ONNX path instead, e.g. `ptyfast export path/to/model.pt`."
        )
    source = _from_files(name, files, shipped=True)
    return source


def resolve_model(spec: str | os.PathLike | None = None) -> ModelSource:
    """Resolve a model name or path to its files and manifest.

    Parameters
    ----------
    spec : str, path or None
        A shipped model name (``"ptynet-s"``), a ``.pt`` checkpoint, an ``.onnx`` file, a TensorRT
        ``.engine`` with its ``.json`` sidecar, or a directory holding one model's files. ``None`` means
        the shipped default (``ptynet-s``).

    Returns
    -------
    ModelSource

    Raises
    ------
    InputError
        Unknown names (the message lists the choices), missing or corrupt files, foreign architectures,
        directories holding several models.
    """
    spec = DEFAULT_MODEL if spec is None else spec
    text = os.fspath(spec)
    if text.lower() in SHIPPED and not Path(text).exists():
        return _shipped(text.lower())
    path = Path(text).expanduser()
    if not path.exists():
        if text.lower() in REGISTRY:
            raise InputError(
                f"'{text}' is a registered architecture without shipped weights; train one "
                f"(`ptyfast train --model {text.lower()}`) and pass its checkpoint path."
            )
        looks_like_path = any(c in text for c in "/\\") or Path(text).suffix
        if looks_like_path:
            raise InputError(f"model file {path} does not exist; check the path.")
        raise InputError(
            f"unknown model '{text}'; shipped models are: {', '.join(SHIPPED)} "
            f"(registered architectures: {', '.join(sorted(REGISTRY))}), or pass a .pt/.onnx/.engine path."
        )
    if path.is_dir():
        known = CHECKPOINT_SUFFIXES + ONNX_SUFFIXES + ENGINE_SUFFIXES
        files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in known)
        if not files:
            raise InputError(f"folder {path} holds no .pt, .onnx or .engine model file; pass the file itself.")
        stems = sorted({p.name.split(".")[0] for p in files})
        if len(stems) > 1:
            raise InputError(
                f"folder {path} holds several models ({', '.join(stems)}); pass the file you mean."
            )
        return _from_files(stems[0], files)
    suffix = path.suffix.lower()
    if suffix not in CHECKPOINT_SUFFIXES + ONNX_SUFFIXES + ENGINE_SUFFIXES:
        raise InputError(
            f"model file {path} has an unknown type '{suffix or '(none)'}'; expected .pt, .onnx or .engine."
        )
    files = [path]
    if suffix in ENGINE_SUFFIXES:
        # an engine is usually exported beside its ONNX source: keep it for rebuilds
        base = path.name.split(".")[0]
        sibling = path.with_name(base + ".onnx")
        if sibling.is_file():
            files.append(sibling)
    return _from_files(path.name.split(".")[0], files)


def shipped_models(*, include_missing: bool = False) -> list[tuple[str, ModelSource | None]]:
    """The shipped pre-trained models: ``(name, source)``, source ``None`` when its files are absent.

    Parameters
    ----------
    include_missing : bool
        Also list shipped names whose files are not (yet) in this installation.
    """
    out: list[tuple[str, ModelSource | None]] = []
    for name in SHIPPED:
        try:
            out.append((name, _shipped(name)))
        except InputError:
            if include_missing:
                out.append((name, None))
    return out


__all__ = [
    "ModelSource", "SHIPPED", "DEFAULT_MODEL", "resolve_model", "shipped_models", "read_onnx_manifest",
    "cache_dir",
]
