"""On-disk cache of the torch CPU backend's start-up work: the folded, traced TorchScript module and the bf16
agreement figure, under ``$PTYFAST_CACHE/torch`` (``~/.cache/ptyfast/torch``), like the TensorRT engines.

Both are keyed by the checkpoint's content (sha256), the torch and ptyfast versions, the precision, the memory
layout, the input shape and the CPU's vector extensions, so a changed model, library or machine never loads a
stale entry. A cache that cannot be created, read or written is skipped silently: the work is then done again,
as without a cache. Entries are written atomically (a half-written module is never loaded); one that fails to
load is traced again and replaced.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from ptyfast import __version__
from ptyfast.errors import InputError

#: CPU flags that change what a traced graph runs (its kernels are chosen for the machine it was frozen on).
ISA_FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile", "fma")


def _folder() -> Path | None:
    from ptyfast.models.pretrained import cache_dir

    try:
        return cache_dir("torch")
    except InputError:
        return None


def cache_key(checkpoint: str | Path, *parts) -> str:
    """A hex key of the checkpoint's bytes, the library versions, the CPU's vector extensions and ``parts``."""
    import torch

    from ptyfast.machine import cpu_flags
    from ptyfast.models.manifest import file_hash

    isa = sorted(cpu_flags() & set(ISA_FLAGS))
    text = json.dumps([file_hash(checkpoint), torch.__version__, __version__, isa, [str(p) for p in parts]])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def cached_inference_module(checkpoint: str | Path, model, example, *, dtype, channels_last: bool):
    """``(module, note, cached)``: :func:`ptyfast.models.inference.inference_module` of ``model``, loaded from
    the cache when an entry for this checkpoint, precision, layout, input shape and machine exists (``cached``
    True), else traced and, when tracing succeeded, stored for the next run."""
    import torch

    from ptyfast.io.atomic import atomic_path
    from ptyfast.models.inference import inference_module

    folder = _folder()
    dtype_name = str(dtype).removeprefix("torch.")
    path = None if folder is None else folder / (
        f"{Path(checkpoint).stem}-{dtype_name}-{cache_key(checkpoint, dtype_name, channels_last, tuple(example.shape))}"
        ".ts")
    if path is not None and path.is_file():
        try:
            return torch.jit.load(str(path), map_location="cpu").eval(), None, True
        except Exception:  # noqa: BLE001 - an unreadable entry (truncated, another torch's format): trace again
            pass
    module, note = inference_module(model, example, dtype=dtype, channels_last=channels_last)
    if path is not None and note is None:
        try:
            with atomic_path(path) as tmp:
                torch.jit.save(module, str(tmp))
        except OSError:
            pass
    return module, note, False


def cached_agreement(backend, compute) -> tuple[float | None, bool]:
    """``(compute(backend), False)`` the first time for this checkpoint, precision and machine, then the stored
    figure ``(value, True)``: the agreement of a backend's reduced precision with fp32 does not change between
    runs of the same model on the same machine and library versions."""
    from ptyfast.io.atomic import atomic_path

    folder = _folder()
    path = None if folder is None else folder / (
        f"{Path(backend.model_path).stem}-{backend.precision}-agreement-"
        f"{cache_key(backend.model_path, backend.precision, 'agreement')}.json")
    if path is not None and path.is_file():
        try:
            value = json.loads(path.read_text())["relative_rms"]
            return (None if value is None else float(value)), True
        except (OSError, ValueError, KeyError, TypeError):
            pass
    value = compute(backend)
    if path is not None:
        try:
            with atomic_path(path) as tmp:
                tmp.write_text(json.dumps({"relative_rms": value}))
        except OSError:
            pass
    return value, False
