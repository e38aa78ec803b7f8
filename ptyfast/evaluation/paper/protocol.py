"""The paper protocol's constants, the paper's own numbers, the run's settings and its inputs (held-out images,
test objects, simulated scans). See :mod:`ptyfast.evaluation.paper` for the protocol."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ptyfast.errors import InputError

OVERLAPS = (0.75, 0.5, 0.25, 0.0)
TRAINABLE = ("ptychonn", "ptychonet", "ptynet-b")
ARCHITECTURES = ("ptynet-s",) + TRAINABLE
LABELS = {"ptynet-s": "PtyNet-S", "ptynet-s-paper": "PtyNet-S", "ptychonn": "PtychoNN", "ptychonet": "PtychoNet",
          "ptynet-b": "PtyNet-B"}
VALIDATIONS = 4  # validation passes of a budgeted training run (each picks the best checkpoint)
TEST_PATTERN = re.compile(r"cat_face_angle9\d\.", re.IGNORECASE)

# -- the paper's numbers (Pan et al., iScience 2023) ----------------------------------------------------------
#: Table 1 as printed (parameters in thousands; phase MSE on PtychoNN's tungsten data; A100 utilisation; GB).
#: The printed 5512 k / 1247 k of PtychoNN / PtychoNet are swapped: ptyfast's PtychoNN has exactly 1,247,074 parameters
#: and PtychoNet with DCGAN widths 5,510,850 (its text also gives PtychoNN 1.2 M).
PAPER_TABLE1 = {
    "ptychonn": {"parameters_k": 5512, "phase_mse": 0.0885, "gpu_share": "86 %", "gpu_memory_gb": 2.7},
    "ptychonet": {"parameters_k": 1247, "phase_mse": 0.1633, "gpu_share": "80 %", "gpu_memory_gb": 2.3},
    "ptynet-s": {"parameters_k": 325, "phase_mse": 0.0852, "gpu_share": "46 %", "gpu_memory_gb": 2.0},
}
#: Table 2: phase (PSNR dB, SSIM, MSE) per overlap; the 0 % column is not in the paper's text.
PAPER_TABLE2 = {
    "ptynet-s": {0.75: (12.919, 0.793, 0.010), 0.5: (14.349, 0.816, 0.011), 0.25: (12.353, 0.791, 0.041)},
    "ptynet-b": {0.75: (12.419, 0.802, 0.009), 0.5: (12.434, 0.799, 0.021), 0.25: (12.933, 0.797, 0.025)},
}
#: Table 3 (PtyNet-B): (PSNR, SSIM, MSE) for amplitude and phase per condition.
PAPER_TABLE3 = {
    "amplitude": {"clear": (19.603, 0.714, 0.005), "noise": (17.710, 0.689, 0.009),
                  "finetune_clear": (22.714, 0.753, 0.002), "finetune_noise": (25.312, 0.756, 0.001)},
    "phase": {"clear": (17.694, 0.691, 0.009), "noise": (16.384, 0.670, 0.013),
              "finetune_clear": (22.713, 0.748, 0.002), "finetune_noise": (25.314, 0.764, 0.001)},
}
PAPER_TRAINING = {
    "ptynet-s": "1000 epochs, batch 16, on one NVIDIA A100 80 GB, ≈ 3.2 h (100 training faces)",
    "ptynet-b": "1000 epochs, batch 64, on one NVIDIA A100 80 GB, ≈ 23.4 h (≈ 60,000 patterns, 4 overlaps)",
    "ptychonn": "same strategy as PtyNet-S (Table 1), on an A100",
    "ptychonet": "not given (Table 1 only); Guan & Tsai's own recipe: Adam, lr 2e-4, β₁ 0.5",
}
PAPER_FINETUNE = "256 patterns of 128² (75 % overlap), all parameters, < 90 s on one A100; 300 epochs (simulated)"


@dataclass
class PaperConfig:
    """Settings of the paper-protocol run (defaults: the real run; the tests shrink every knob).

    Attributes
    ----------
    models : architectures to evaluate (``ptynet-s`` is the shipped or given weights; the others are trained).
    model_s : PtyNet-S weights (shipped name or .pt path); None = the shipped ``ptynet-s``.
    budget_minutes : wall-clock training budget per trained model on this machine.
    train_steps : fixed number of training steps instead of the budget (no calibration run).
    train_batch : training batch (None = the shipped PtyNet-S's batch, else 32).
    pool_size, train_object_size, val_size : training data: pool objects, their size, validation patterns.
    test_objects : held-out objects (pairs of different faces).
    object_size : side of each test object in pixels (paper: 608–640).
    overlaps : scan overlaps of Table 2 (subset of 0.75, 0.5, 0.25, 0).
    jitter : position jitter in pixels (uniform ± this, per axis).
    noise_photons : photons per frame of the noisy scan of Table 3 (Poisson).
    finetune_model : architecture fine-tuned in Table 3.
    finetune_epochs, finetune_overlap : fine-tuning epochs and the scan's overlap.
    refine_overlaps : overlaps of Figure 9 (subset of ``overlaps``' values or any in [0, 1)).
    refine_iterations : rPIE iterations of the random start (paper: 50).
    refine_batch : rPIE mini-batch (None: sequential, the textbook algorithm).
    experiments : any of ``table1``, ``table2``, ``table3``, ``figure9``.
    threads : CPU threads for torch (0 = default).
    seed : seeds scans, noise and training.
    """

    models: tuple[str, ...] = ARCHITECTURES
    model_s: str | None = None
    budget_minutes: float = 5.0
    train_steps: int | None = None
    train_batch: int | None = None
    pool_size: int = 160
    train_object_size: int = 320
    val_size: int = 128
    test_objects: int = 5
    object_size: int = 608
    overlaps: tuple[float, ...] = OVERLAPS
    jitter: float = 2.0
    noise_photons: float = 1e6
    finetune_model: str = "ptynet-s"
    finetune_epochs: int = 30
    finetune_overlap: float = 0.5
    refine_overlaps: tuple[float, ...] = (0.75, 0.5, 0.25)
    refine_iterations: int = 50
    refine_batch: int | None = None
    experiments: tuple[str, ...] = ("table1", "table2", "table3", "figure9")
    threads: int = 0
    seed: int = 0

    def validate(self) -> "PaperConfig":
        """Check every field; raise :class:`InputError` naming the first bad one."""
        models = tuple(m.lower() for m in self.models)
        bad = [m for m in models if m not in ARCHITECTURES]
        if bad or not models:
            raise InputError(f"--models must name some of {', '.join(ARCHITECTURES)}; found {', '.join(bad) or 'none'}.")
        self.models = models
        if not self.budget_minutes > 0:
            raise InputError(f"--budget-minutes must be positive; found {self.budget_minutes}.")
        if self.train_steps is not None and self.train_steps < 1:
            raise InputError(f"--train-steps must be at least 1; found {self.train_steps}.")
        if self.test_objects < 1:
            raise InputError(f"--test-objects must be at least 1; found {self.test_objects}.")
        if self.object_size < 140:
            raise InputError(f"--object-size must be at least 140 px (the probe is 128²); found {self.object_size}.")
        for o in tuple(self.overlaps) + tuple(self.refine_overlaps) + (self.finetune_overlap,):
            if not 0.0 <= o < 1.0:
                raise InputError(f"overlaps are fractions in [0, 1) (0.5 = 50 %); found {o}.")
        if not self.overlaps:
            raise InputError("give at least one overlap.")
        bad = [e for e in self.experiments if e not in ("table1", "table2", "table3", "figure9")]
        if bad:
            raise InputError(f"unknown experiment '{bad[0]}'; choose from table1, table2, table3, figure9.")
        if self.finetune_model not in ARCHITECTURES:
            raise InputError(f"the fine-tuned model must be one of {', '.join(ARCHITECTURES)}; found '{self.finetune_model}'.")
        if "table3" in self.experiments and self.finetune_model not in self.models:
            raise InputError(f"Table 3 fine-tunes '{self.finetune_model}', which is not among --models.")
        if self.finetune_epochs < 1 or self.refine_iterations < 1:
            raise InputError("fine-tuning epochs and refinement iterations must be at least 1.")
        if not self.noise_photons > 0:
            raise InputError(f"noise photons must be positive; found {self.noise_photons}.")
        return self


# -- inputs -------------------------------------------------------------------------------------------------------


def split_images(folder: str | os.PathLike | None) -> tuple[list[Path], list[Path], str]:
    """Held-out test images, training images and a sentence saying how they were split.

    Raises
    ------
    InputError
        No folder given, a missing folder, or fewer than two images.
    """
    from ptyfast.training.data import list_images

    if folder is None:
        raise InputError("the paper protocol needs --images DIR, the folder of the paper's cat-face PNGs "
                         "(e.g. ../shared/data/ptynet-cat-faces/cat_face).")
    path = Path(folder)
    if not path.is_dir():
        raise InputError(f"image folder {path} does not exist or is not a folder; pass the cat-face folder with --images.")
    files = list_images([path])
    if len(files) < 2:
        raise InputError(f"image folder {path} holds {len(files)} image(s); the protocol needs at least 2 (PNG/JPEG/TIFF).")
    test = [f for f in files if TEST_PATTERN.search(f.name)]
    if len(test) >= 2:
        note = f"held out: {', '.join(f.stem for f in test[:2])} … ({len(test)} images, the shipped model's validation split)"
    else:
        k = max(2, int(round(0.1 * len(files))))
        test = files[-k:]
        note = f"held out: the last {k} of {len(files)} sorted images ({test[0].stem} … {test[-1].stem})"
    train = [f for f in files if f not in test]
    return test, train, note


def training_files(folder: Path, test: list[Path], train: list[Path]) -> list[Path]:
    """The list handed to :func:`ptyfast.training.train`. When its own sorted split (last 10 % for validation)
    holds out exactly the test images, pass the whole folder: the test images then only pick the best checkpoint,
    exactly as for the shipped PtyNet-S; otherwise pass the training images only."""
    from ptyfast.training.data import list_images

    files = list_images([folder])
    n_val = int(round(len(files) * 0.1)) if len(files) >= 4 else 0
    if n_val and set(files[len(files) - n_val:]) == set(test):
        return files
    return train


def test_objects(test: list[Path], n: int, size: int) -> list[tuple[str, np.ndarray]]:
    """``n`` complex objects, amplitude and phase from two different held-out images (pairs 0-1, 2-3, …)."""
    from ptyfast.io.images import read_image
    from ptyfast.physics.objects import object_from_images

    out = []
    for i in range(n):
        a, p = test[(2 * i) % len(test)], test[(2 * i + 1) % len(test)]
        if a == p:
            p = test[(2 * i + 2) % len(test)]
        out.append((f"{a.stem} | {p.stem}", object_from_images(read_image(a), read_image(p), (size, size))))
    return out


def simulate(obj: np.ndarray, overlap: float, *, jitter: float, seed: int, photons: float | None = None,
             noise: bool = False):
    """The protocol's raster scan of ``obj`` with the bundled probe."""
    from ptyfast.physics.probe import paper_probe
    from ptyfast.physics.scanpath import raster_positions
    from ptyfast.physics.simulate import simulate_scan

    rng = np.random.default_rng(seed)
    probe = paper_probe()
    pos = raster_positions(obj.shape, probe.shape, overlap=overlap, jitter=jitter, rng=rng)
    return simulate_scan(obj, probe, pos, photons=photons, noise=noise, rng=rng,
                         meta={"source": f"paper protocol, {overlap:.0%} overlap"})
