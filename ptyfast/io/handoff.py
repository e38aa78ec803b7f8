"""Hand a reconstruction to an iterative code as its initial guess: ``reconstruct ... --handoff ptychi DIR``.

Pty-Chi 2.2 (``ptychi``, Argonne's PyTorch ptychography engines) conventions, written so that its forward model
reproduces ptyfast's exactly (the same data misfit at the start; checked in ``benchmarks/ptychi_compare.py``):

- diffraction (N, H, W) photons with the zero frequency at the *corner* (ifftshift of ptyfast's centred
  frames), used with ``data_options.fft_shift = False`` (Pty-Chi's far-field model does not shift);
- probe (1, 1, H, W) in the scale of its *unnormalised* FFT: ptyfast's probe (orthonormal FFT, Σ|P|² photons)
  divided by √(H·W), and multiplied by the consistency pass's amplitude scale s so that P·O predicts the
  measured counts with the network's object as it is;
- object (1, rows, cols): the network's stitched object on its grid plus a ``MARGIN``-pixel border (Pty-Chi's
  Fourier-shift patch extraction reads one pixel beyond a window); unlit pixels get the mean lit value;
- positions: probe *centres* in pixels of that object buffer (top-left corner + margin + (H − 1)/2), with
  ``object_options.determine_position_origin_coords_by = SPECIFIED`` and origin (0, 0);
- ``valid_pixel_mask`` (H, W) when the scan has a detector mask (corner-centred like the data).

DIR gets ``ptychi_init.h5`` (all of the above) and ``run_ptychi.py``, a short script that starts Pty-Chi's rPIE
from it (``python run_ptychi.py --epochs 50``; ``--flat`` starts from a unit object instead, for comparison)
and writes ``ptychi_result.h5``. Nothing of Pty-Chi is imported here.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from ptyfast.errors import InputError

MARGIN = 2

RUN_PTYCHI = '''"""Start Pty-Chi's rPIE from ptyfast's hand-off (written by `ptyfast reconstruct --handoff ptychi`).

    python run_ptychi.py [--epochs 50] [--batch 16] [--alpha 0.5] [--flat] [--device cpu|cuda]

Reads ptychi_init.h5 beside this script; writes ptychi_result.h5 (object, probe, loss per epoch).
"""
import argparse
import json
from pathlib import Path

import h5py
import numpy as np
import torch

import ptychi.api as api
from ptychi.api.task import PtychographyTask

here = Path(__file__).resolve().parent
ap = argparse.ArgumentParser()
ap.add_argument("--epochs", type=int, default=50)
ap.add_argument("--batch", type=int, default=16)
ap.add_argument("--alpha", type=float, default=0.5, help="rPIE regularisation of object and probe updates")
ap.add_argument("--flat", action="store_true", help="start from a unit object instead of the network's")
ap.add_argument("--no-probe-update", action="store_true")
ap.add_argument("--device", default="cpu")
ap.add_argument("--output", default=str(here / "ptychi_result.h5"))
a = ap.parse_args()

with h5py.File(here / "ptychi_init.h5", "r") as f:
    data = torch.from_numpy(f["data"][()])
    obj = f["object"][()]
    probe = f["probe"][()]
    centres = f["positions_px"][()]
    mask = torch.from_numpy(f["valid_pixel_mask"][()].astype(bool)) if "valid_pixel_mask" in f else None
    pixel = float(f["pixel_size_m"][()]) if "pixel_size_m" in f else float("nan")
if a.flat:
    obj = np.ones_like(obj)

o = api.RPIEOptions()
o.data_options.fft_shift = False  # the data are stored with the zero frequency at the corner
o.object_options.determine_position_origin_coords_by = api.ObjectPosOriginCoordsMethods.SPECIFIED
o.object_options.position_origin_coords = np.zeros(2)  # positions are pixel indices of the object buffer
o.object_options.pixel_size_m = pixel if np.isfinite(pixel) else 1e-8  # the scan's, when its geometry is known
o.object_options.optimizable = True
o.object_options.optimizer = api.Optimizers.SGD
o.object_options.step_size = 1.0
o.object_options.alpha = a.alpha
o.probe_options.optimizable = not a.no_probe_update
o.probe_options.optimizer = api.Optimizers.SGD
o.probe_options.step_size = 1.0
o.probe_options.alpha = a.alpha
o.probe_position_options.optimizable = False
o.reconstructor_options.batch_size = a.batch
o.reconstructor_options.num_epochs = a.epochs
o.reconstructor_options.default_device = api.Devices.CUDA if a.device == "cuda" else api.Devices.CPU
o.reconstructor_options.random_seed = 0
extra = {"valid_pixel_mask": mask} if mask is not None else {}
task = PtychographyTask(o, diffraction_data=data, object_data=torch.from_numpy(obj),
                        probe_data=torch.from_numpy(probe), probe_position_y_px=torch.from_numpy(centres[:, 0]),
                        probe_position_x_px=torch.from_numpy(centres[:, 1]), **extra)
task.run()
loss = [float(v) for v in task.reconstructor.loss_tracker.table["loss"]]
with h5py.File(a.output, "w") as f:
    f["object"] = task.get_data_to_cpu("object", as_numpy=True)
    f["probe"] = task.get_data_to_cpu("probe", as_numpy=True)
    f["loss"] = np.asarray(loss)
print(json.dumps({"loss": loss, "output": a.output}))
'''


def write_ptychi_handoff(folder: str | Path, scan, rec) -> list[Path]:
    """Write ``ptychi_init.h5`` and ``run_ptychi.py`` into ``folder`` (see the module docstring).

    ``scan`` is the reconstructed scan (its frames are read again, chunk by chunk), ``rec`` its
    :class:`~ptyfast.runtime.reconstruct.Reconstruction` (object, grid positions, probe, consistency)."""
    from ptyfast.io.atomic import atomic_path, output_folder, output_transaction, write_text

    if rec.probe is None:
        raise InputError("--handoff needs a probe: the scan has none and the model's probe is unknown.")
    h, w = rec.probe.shape
    if scan.frame_shape != (h, w):
        raise InputError(f"--handoff needs the frames as measured; this reconstruction fitted {scan.frame_shape[0]}×"
                         f"{scan.frame_shape[1]} frames to {h}×{w} (--fit): hand off a scan recorded at the model size.")
    scale = rec.consistency.scale if rec.consistency is not None else 1.0
    probe = (np.asarray(rec.probe, np.complex64) * np.float32(scale / np.sqrt(h * w)))[None, None]
    lit = rec.covered(0.1)
    fill = np.mean(rec.object[lit]) if lit.any() else 1.0
    obj = np.where(rec.covered(1e-3), rec.object, fill).astype(np.complex64)
    obj = np.pad(obj, MARGIN, constant_values=fill)[None]
    centres = np.asarray(rec.positions, np.float64) + MARGIN + (np.array([h, w]) - 1) / 2.0
    folder = Path(folder)
    with output_folder(folder), output_transaction():
        init = folder / "ptychi_init.h5"
        with atomic_path(init) as tmp, h5py.File(tmp, "w", rdcc_nbytes=0) as f:
            data = f.create_dataset("data", shape=(scan.n_frames, h, w), dtype=np.float32, chunks=(1, h, w),
                                    compression="gzip", compression_opts=1)
            for s, frames in scan.iter_chunks(256):
                data[s : s + len(frames)] = np.fft.ifftshift(frames, axes=(-2, -1))
            f["object"] = obj
            f["probe"] = probe
            f["positions_px"] = centres
            f["pixel_size_m"] = float(scan.object_pixel_size())  # NaN when the scan gives no geometry
            if scan.mask is not None:
                f["valid_pixel_mask"] = np.fft.ifftshift(np.asarray(scan.mask, bool))
            f.attrs["convention"] = ("Pty-Chi 2.2: data zero frequency at the corner (fft_shift=False); probe for "
                                     "the unnormalised FFT; positions_px = probe centres in object-buffer pixels, "
                                     "origin (0, 0) (determine_position_origin_coords_by=SPECIFIED)")
            f.attrs["source"] = str(scan.meta.get("source", ""))
            f.attrs["amplitude_scale_applied_to_probe"] = float(scale)
        script = write_text(folder / "run_ptychi.py", RUN_PTYCHI)
    return [init, script]
