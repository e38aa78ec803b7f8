"""The model manifest: what a set of weights expects and produces. Torch-free.

The same record is written as JSON beside torch weights, as ONNX ``metadata_props`` (key ``ptyfast.manifest``
plus one flat key per top-level field) and as the JSON sidecar of a TensorRT engine. Inference reads it;
nothing downstream guesses.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ptyfast.errors import InputError

MANIFEST_VERSION = 1


@dataclass
class Manifest:
    """What a model expects (input, preprocessing, probe) and what it outputs.

    Attributes
    ----------
    architecture : registered name (``ptynet-s``, ``ptynet-b``, ``ptychonn``).
    input_size : (H, W) pattern size in pixels.
    preprocessing : ``{"transform": "sqrt", "normalise": "max"}``: network input = √I / max(√I) per pattern.
    amplitude_range : (lo, hi) bounds of the amplitude head.
    phase_range : (lo, hi) bounds of the phase head, radians.
    probe_sha256 : hash of the complex64 probe the model was trained for ("" if any probe).
    probe_photons : sum(|P|²) of that probe.
    refined_probe_sha256 : for a model trained on measured data (``train --labels``), hash of its reference's
        refined probe, saved beside the weights scaled to the training probe's power: the instrument's probe
        as the iterative solver found it, which ``reconstruct`` stitches and checks with when a scan's own
        probe matches the training probe ("" otherwise).
    pixel_size : object pixel size in metres the model was trained for (0 if unspecified).
    object_amplitude_range / object_phase_range : the training objects' ranges (radians for phase).
    phase_offsets : ``free`` when each output patch carries its own undetermined phase offset (trained with a
        loss that ignores it, as one pattern cannot see it), so stitching solves the offsets from the overlaps;
        ``absolute`` when the network was trained to predict the absolute phase.
    training : free-form summary (data, steps, time, hardware, validation metrics).
    finetuned_on : description of the scan a fine-tuned model was adapted to ("" for pre-trained).
    conditioning : how the scan's probe enters the input ("" none: the model knows one probe, ``probe_sha256``;
        ``probe`` / ``probe+estimate``: see :data:`ptyfast.models.preprocess.CONDITIONING_CHANNELS`).
    probe_family : for a probe-conditioned model, the family of probes it was trained on
        (:meth:`ptyfast.physics.probe_family.ProbeFamily.describe`); ``reconstruct`` accepts any confined probe.
    """

    architecture: str
    input_size: tuple[int, int] = (128, 128)
    preprocessing: dict = field(default_factory=lambda: {"transform": "sqrt", "normalise": "max"})
    amplitude_range: tuple[float, float] = (0.0, 1.0)
    phase_range: tuple[float, float] = (-float(np.pi), float(np.pi))
    probe_sha256: str = ""
    probe_photons: float = 0.0
    refined_probe_sha256: str = ""
    pixel_size: float = 0.0
    object_amplitude_range: tuple[float, float] = (1.0 / 3.0, 1.0)
    object_phase_range: tuple[float, float] = (float(np.pi / 6), float(np.pi / 2))
    phase_offsets: str = "absolute"
    training: dict = field(default_factory=dict)
    finetuned_on: str = ""
    conditioning: str = ""
    probe_family: dict = field(default_factory=dict)
    ptyfast_version: str = ""
    manifest_version: int = MANIFEST_VERSION

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict) -> "Manifest":
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        if "architecture" not in known:
            raise InputError("the model manifest has no 'architecture' field; it is not a ptyfast model.")
        for key in ("input_size", "amplitude_range", "phase_range", "object_amplitude_range", "object_phase_range"):
            if key in known:
                known[key] = tuple(known[key])
        return cls(**known)

    @classmethod
    def from_json(cls, text: str) -> "Manifest":
        try:
            return cls.from_dict(json.loads(text))
        except json.JSONDecodeError as exc:
            raise InputError(f"the model manifest is not valid JSON ({exc}).") from None

    def save(self, path: str | Path) -> None:
        from ptyfast.io.atomic import write_text

        write_text(path, self.to_json())

    @classmethod
    def load(cls, path: str | Path) -> "Manifest":
        return cls.from_json(Path(path).read_text())

    def metadata_props(self) -> dict[str, str]:
        """Flat string map for ONNX ``metadata_props`` / engine sidecars."""
        return {"ptyfast.manifest": self.to_json(), "ptyfast.architecture": self.architecture,
                "ptyfast.input_size": "x".join(map(str, self.input_size))}


def probe_hash(probe: np.ndarray) -> str:
    """sha256 of a probe as complex64 C-order bytes (shape included)."""
    p = np.ascontiguousarray(np.asarray(probe, dtype=np.complex64))
    h = hashlib.sha256(str(p.shape).encode())
    h.update(p.tobytes())
    return h.hexdigest()


def file_hash(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
