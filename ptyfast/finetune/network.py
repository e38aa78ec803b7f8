"""The network as fine-tuning uses it: which weights train, how it is called (channels-last, autocast) and the
``|P|²``-weighted stitching of its predictions."""

from __future__ import annotations

import numpy as np

from ptyfast.errors import InputError

__all__ = ["Network", "Stitch", "predict_object", "set_trainable"]


def set_trainable(model, freeze: str) -> list:
    """Mark the weights fine-tuning updates (all, or all but the encoder's) and return them."""
    for p in model.parameters():
        p.requires_grad_(True)
    if freeze == "encoder":
        enc = getattr(model, "encoder", None)
        if enc is None:
            raise InputError(f"--freeze encoder: the '{type(model).__name__}' network has no encoder block.")
        for p in enc.parameters():
            p.requires_grad_(False)
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise InputError("nothing left to fine-tune: every weight is frozen.")
    return params


class Network:
    """The network as fine-tuning calls it: channels-last on the CPU, bf16 autocast when asked, fp32 out."""

    def __init__(self, model, device, amp: str) -> None:
        import torch

        self.model, self.device = model, torch.device(device)
        self.channels_last = self.device.type == "cpu"
        self.autocast = dict(device_type=self.device.type, dtype=torch.bfloat16, enabled=amp == "bf16")

    def __call__(self, xb):
        import torch

        if self.channels_last:
            xb = xb.contiguous(memory_format=torch.channels_last)
        with torch.autocast(**self.autocast):
            a, ph = self.model(xb)
        return a.float(), ph.float()

    def over(self, x, batch: int):
        """Yield ``(start, amplitude, phase)`` for consecutive batches of the (N, 1, H, W) tensor ``x``."""
        for s in range(0, len(x), batch):
            yield (s, *self(x[s : s + batch].to(self.device)))


class Stitch:
    """``|P|²``-weighted overlap-add of predicted patches into a numpy object (what reconstruct writes)."""

    def __init__(self, shape: tuple[int, int], weight: np.ndarray) -> None:
        self.num = np.zeros(shape, np.complex64)
        self.wsum = np.zeros(shape, np.float32)
        self.weight = np.asarray(weight, np.float32)

    def add(self, amplitude, phase, positions: np.ndarray) -> None:
        import torch

        from ptyfast.kernels import overlap_add

        patches = torch.polar(amplitude, phase).cpu().numpy().astype(np.complex64, copy=False)
        overlap_add(self.num, patches, positions, weights=self.weight, weight_accum=self.wsum)

    def object(self) -> np.ndarray:
        from ptyfast.kernels import normalise

        return normalise(self.num, self.wsum)


def predict_object(model, x: np.ndarray, positions: np.ndarray, probe: np.ndarray, object_shape,
                   *, batch: int = 64, amp: str = "bf16", device="cpu") -> tuple[np.ndarray, np.ndarray]:
    """Predict every patch and stitch them with ``|P|²`` weights (:func:`ptyfast.kernels.stitch` semantics).

    Parameters
    ----------
    model : torch module (used in eval mode, no gradients).
    x : (N, 1, H, W) float32 preprocessed patterns.
    positions : (N, 2) (y, x) positions on the object grid (≥ 0).
    probe : (H, W) complex probe (only ``|P|²`` is used, as the stitching weight).
    object_shape : (rows, cols).

    Returns
    -------
    object : complex64 (rows, cols); weight_map : float32 (rows, cols).
    """
    import torch

    stitch = Stitch(tuple(object_shape), np.abs(probe) ** 2)
    net = Network(model, device, amp)
    net.channels_last = False  # the caller's module layout is left as it is
    was = model.training
    model.eval()
    with torch.no_grad():
        for s, a, ph in net.over(torch.from_numpy(np.ascontiguousarray(x)), batch):
            stitch.add(a, ph, positions[s : s + len(a)])
    model.train(was)
    return stitch.object(), stitch.wsum
