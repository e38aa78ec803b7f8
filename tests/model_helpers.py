"""Random-weight checkpoints for tests (throughput, export and plumbing do not depend on trained values)."""

from __future__ import annotations


def random_checkpoint(path, arch: str = "ptynet-s", *, seed: int = 0, probe=None, **manifest):
    """Save seeded random ``arch`` weights to ``path``; ``probe`` (optional) is recorded in the manifest by hash.
    Returns (path, model, manifest)."""
    import numpy as np
    import torch

    from ptyfast.models import build_model, get_entry
    from ptyfast.models.checkpoint import save_checkpoint
    from ptyfast.models.manifest import probe_hash

    torch.manual_seed(seed)
    model = build_model(arch).eval()
    if probe is not None:
        manifest.setdefault("probe_sha256", probe_hash(probe))
        manifest.setdefault("probe_photons", float(np.sum(np.abs(probe) ** 2)))
    man = get_entry(arch).manifest(**manifest)
    return save_checkpoint(path, model, man), model, man
