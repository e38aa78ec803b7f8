"""What ``ptyfast bench`` measures (:class:`BenchOptions`) and the published figures it reads its results
against (:data:`REFERENCES`)."""

from __future__ import annotations

from dataclasses import dataclass

from ptyfast.choices import Precision
from ptyfast.errors import InputError

__all__ = ["BENCH_BACKENDS", "BENCH_PRECISIONS", "REFERENCES", "BenchOptions"]

BENCH_BACKENDS = ("onnxruntime", "torch", "tensorrt")
BENCH_PRECISIONS = Precision.values()

#: Published figures the measured ones are read against.
REFERENCES = [
    {"key": "paper_a100_utilisation", "what": "PtyNet-S inference on an NVIDIA A100 (paper Table 1)",
     "value": "46 % of the GPU", "source": "Pan et al., iScience 2023, Table 1"},
    {"key": "paper_a100_memory", "what": "PtyNet-S GPU memory on an A100 (paper Table 1)",
     "value": "2.0 GB", "bytes": 2.0e9, "source": "Pan et al., iScience 2023, Table 1"},
    {"key": "paper_finetune", "what": "fine-tune all PtyNet parameters on 256 patterns of 128² (A100)",
     "value": "< 90 s", "seconds": 90.0, "source": "Pan et al., iScience 2023, Results (fine-tuning)"},
    {"key": "babu_a6000_trt", "what": "PtychoNN 2.0, RTX A6000 + TensorRT, batch 16",
     "value": "70 µs/frame ≈ 14,286 patterns/s", "patterns_per_s": 1e6 / 70.0,
     "source": "Babu et al., Nat. Commun. 14, 7059 (2023)"},
]


@dataclass
class BenchOptions:
    """What ``ptyfast bench`` measures.

    Attributes
    ----------
    model : shipped name or .pt/.onnx path; None = the shipped PtyNet-S, or seeded random PtyNet-S weights
        when none is shipped (throughput does not depend on the weight values).
    backends : subset of ``onnxruntime``, ``torch``, ``tensorrt``.
    precisions : subset of ``fp32``, ``fp16``, ``bf16``, ``int8``.
    batches : batch sizes of the model-only cases.
    repeats : most timed calls per case (at least 2 are made; fewer than ``repeats`` when ``max_seconds``
        is spent).
    max_seconds : time budget of the timed calls of one case.
    device : ``auto``, ``cpu`` or ``cuda``.
    threads : CPU threads (default: all cores this process may use).
    end_to_end : also run the end-to-end cases.
    frames : patterns of the end-to-end scan (rounded to a square raster).
    e2e_batch : inference batch of the end-to-end cases (None: each backend's default, as ``reconstruct``).
    finetune : also time one fine-tuning epoch on 256 patterns (torch) and extrapolate to 300 epochs.
    peak : measure the device's peak matmul FLOP/s.
    seed : seeds the simulated data.
    """

    model: str | None = None
    backends: tuple[str, ...] = ("onnxruntime", "torch")
    precisions: tuple[str, ...] = ("fp32", "int8", "bf16")
    batches: tuple[int, ...] = (1, 16, 256)
    repeats: int = 10
    max_seconds: float = 2.0
    device: str = "auto"
    threads: int | None = None
    end_to_end: bool = True
    frames: int = 256
    e2e_batch: int | None = None
    finetune: bool = False
    peak: bool = True
    seed: int = 0

    def validate(self) -> "BenchOptions":
        """Check every field; raise :class:`InputError` naming the first bad one."""
        for b in self.backends:
            if b not in BENCH_BACKENDS:
                raise InputError(f"unknown backend '{b}'; choose from {', '.join(BENCH_BACKENDS)} or 'all'.")
        for p in self.precisions:
            if p not in BENCH_PRECISIONS:
                raise InputError(f"unknown precision '{p}'; choose from {', '.join(BENCH_PRECISIONS)}.")
        if not self.backends or not self.precisions or not self.batches:
            raise InputError("give at least one backend, one precision and one batch size.")
        if any(int(b) < 1 or int(b) > 65536 for b in self.batches):
            raise InputError(f"batch sizes must be in 1…65536; found {list(self.batches)}.")
        if self.repeats < 1:
            raise InputError(f"--repeats must be at least 1; found {self.repeats}.")
        if self.frames < 4:
            raise InputError(f"--frames must be at least 4; found {self.frames}.")
        if self.e2e_batch is not None and self.e2e_batch < 1:
            raise InputError(f"the end-to-end batch must be at least 1; found {self.e2e_batch}.")
        if self.device not in ("auto", "cpu", "cuda"):
            raise InputError(f"unknown device '{self.device}'; choose auto, cpu or cuda.")
        return self
