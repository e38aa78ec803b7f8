"""Every fixed set of choices an option can take, in one place: the option records validate with them and the
CLI's help lists them from here.

Each is a ``StrEnum``, so a member is its own string (``Fit.CROP == "crop"``); :meth:`Choice.check` returns the
plain string, which records, manifests, checkpoints and JSON keep.
"""

from __future__ import annotations

from enum import StrEnum

from ptyfast.errors import InputError


class Choice(StrEnum):
    """A fixed set of option values, with one-sentence validation."""

    @classmethod
    def values(cls) -> tuple[str, ...]:
        return tuple(m.value for m in cls)

    @classmethod
    def listing(cls) -> str:
        """``"a, b or c"``: the choices for a help text or a message."""
        v = cls.values()
        return v[0] if len(v) == 1 else f"{', '.join(v[:-1])} or {v[-1]}"

    @classmethod
    def check(cls, value, what: str) -> str:
        """``value`` as the plain string of one of the choices (case-insensitive); raises :class:`InputError`
        naming ``what`` otherwise. Plain strings, not members: records are pickled into checkpoints, which load
        only plain values."""
        try:
            return cls(str(value).strip().lower()).value
        except ValueError:
            raise InputError(f"unknown {what} '{value}'; choose {cls.listing()}.") from None


class Fit(Choice):
    """How frames of another size are brought to a model's input (:func:`ptyfast.models.preprocess.fit_frames`)."""

    NONE = "none"
    CROP = "crop"
    BIN = "bin"
    PAD = "pad"


class Weighting(Choice):
    """Stitching weights: ``|P|²`` at sub-pixel positions, or uniform at rounded positions."""

    PROBE = "probe"
    UNIFORM = "uniform"


class Backend(Choice):
    AUTO = "auto"
    ONNXRUNTIME = "onnxruntime"
    TENSORRT = "tensorrt"
    TORCH = "torch"


class Device(Choice):
    AUTO = "auto"
    CPU = "cpu"
    CUDA = "cuda"


class Precision(Choice):
    FP32 = "fp32"
    FP16 = "fp16"
    BF16 = "bf16"
    INT8 = "int8"


class Autocast(Choice):
    """Mixed precision of training and fine-tuning: bf16 autocast or none (fp32)."""

    BF16 = "bf16"
    NONE = "none"


class Schedule(Choice):
    ONECYCLE = "onecycle"
    CYCLIC = "cyclic"


class TrainLoss(Choice):
    """``lit``: in-probe, free phase offsets (ptyfast); ``mse``: full window (the paper)."""

    LIT = "lit"
    MSE = "mse"


class Simulator(Choice):
    """Where training patterns are simulated: ``auto`` (torch on a GPU, numpy on a CPU), ``numpy``, ``torch``."""

    AUTO = "auto"
    NUMPY = "numpy"
    TORCH = "torch"


class Transform(Choice):
    """Network-input transform of the intensities."""

    SQRT = "sqrt"
    LOG1P = "log1p"
    QUARTER = "quarter"


class Normalisation(Choice):
    """Network-input normalisation: by the probe's photons, the pattern's max (paper), its std, or none."""

    PHOTONS = "photons"
    MAX = "max"
    STD = "std"
    NONE = "none"


class FinetuneLoss(Choice):
    L1 = "l1"
    POISSON = "poisson"


class Objective(Choice):
    PATTERN = "pattern"
    OVERLAP = "overlap"
    GUIDED = "guided"


class Freeze(Choice):
    NONE = "none"
    ENCODER = "encoder"


class Scale(Choice):
    FIT = "fit"
    FIXED = "fixed"


class Algorithm(Choice):
    EPIE = "epie"
    RPIE = "rpie"


class Batching(Choice):
    """How a refinement pass groups positions into batches (:mod:`ptyfast.refine.batches`)."""

    RANDOM = "random"
    DISJOINT = "disjoint"


class Handoff(Choice):
    """Iterative codes ``reconstruct --handoff`` writes a starting point for."""

    PTYCHI = "ptychi"


class InitialObject(Choice):
    """Generated starting objects of ``refine --init`` (which also takes a reconstruction file)."""

    FLAT = "flat"
    RANDOM = "random"


class Subset(Choice):
    """Named frame subsets of ``finetune --subset`` (which also takes a fraction in (0, 1])."""

    ALL = "all"
    HALF = "half"


class ScanPath(Choice):
    """Scan paths ``simulate --path`` draws positions on."""

    RASTER = "raster"
    FERMAT = "fermat"


class Compression(Choice):
    """Frame compressions ``convert --compression`` writes (``ptyfast.io.cxi.COMPRESSIONS`` is this list)."""

    NONE = "none"
    GZIP = "gzip"
    LZ4 = "lz4"
    BITSHUFFLE_LZ4 = "bitshuffle-lz4"
    ZSTD = "zstd"
    BLOSC_ZSTD = "blosc-zstd"


class DetectorDtype(Choice):
    """Stored frame types of ``simulate --dtype`` (``ptyfast.physics.simulate.DETECTOR_DTYPES`` is this list)."""

    FLOAT32 = "float32"
    UINT16 = "uint16"
    UINT32 = "uint32"


class ExportFormat(Choice):
    """Artefacts ``export --format`` makes (``export.report.FORMATS`` is this list)."""

    ONNX = "onnx"
    TENSORRT = "tensorrt"


__all__ = ["Choice", "Fit", "Weighting", "Backend", "Device", "Precision", "Autocast", "Schedule", "TrainLoss",
           "Simulator", "Transform", "Normalisation", "FinetuneLoss", "Objective", "Freeze", "Scale", "Algorithm",
           "Handoff", "InitialObject", "Subset", "ScanPath", "Compression", "DetectorDtype", "ExportFormat"]
