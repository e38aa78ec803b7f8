"""Model registry: name → builder + default manifest (timm-style). Importing this needs no torch;
building a network does (the ``train`` extra)."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import import_module

from ptyfast.errors import InputError
from ptyfast.models.manifest import Manifest


@dataclass(frozen=True)
class ModelEntry:
    name: str
    target: str  # "module:Class"
    description: str
    paper: str

    def build(self):
        """Instantiate the torch module (needs torch)."""
        try:
            module, cls = self.target.split(":")
            return getattr(import_module(module), cls)()
        except ModuleNotFoundError as exc:
            if exc.name == "torch":
                raise InputError(
                    f"building '{self.name}' needs PyTorch; install the train extra: pip install 'ptyfast[train]'."
                ) from None
            raise

    def manifest(self, **fields) -> Manifest:
        return Manifest(architecture=self.name, **fields)


REGISTRY: dict[str, ModelEntry] = {}


def register_model(name: str, target: str, description: str, paper: str) -> None:
    REGISTRY[name] = ModelEntry(name, target, description, paper)


register_model("ptynet-s", "ptyfast.models.ptynet_s:PtyNetS",
               "PtyNet-S + BatchNorm, standardised linear heads (325,800 parameters; ptyfast's default)",
               "Pan et al., iScience 2023, trained with ptyfast's recipe")
register_model("ptynet-s-probe", "ptyfast.models.ptynet_s:PtyNetSProbe",
               "ptynet-s with the scan's probe as two more input channels (326,088 parameters)",
               "Pan et al., iScience 2023; probe conditioning by ptyfast")
register_model("ptynet-s-probe-est", "ptyfast.models.ptynet_s:PtyNetSProbeEstimate",
               "ptynet-s-probe plus a one-step physics estimate with the scan's probe as input (326,376 parameters)",
               "Pan et al., iScience 2023; probe conditioning by ptyfast")
register_model("ptynet-s-paper", "ptyfast.models.ptynet_s:PtyNetSPaper",
               "3-block encoder, grouped 3-block decoder, no skips (324,452 parameters)",
               "Pan et al., iScience 2023")
register_model("ptynet-b", "ptyfast.models.ptynet_b:PtyNetB",
               "4+4 residual stages, grouped decoder (≈20.6 M parameters)", "Pan et al., iScience 2023 (Fig. S6)")
register_model("ptychonn", "ptyfast.models.ptychonn:PtychoNN",
               "shared encoder, two bilinear decoders (1,247,074 parameters)", "Cherukara et al., APL 2020")
register_model("ptychonn-recipe", "ptyfast.models.ptychonn:PtychoNNRecipe",
               "PtychoNN + BatchNorm, standardised linear heads (1,250,018 parameters; ptyfast's baseline)",
               "Cherukara et al., APL 2020, trained with ptyfast's recipe")
register_model("ptychonet", "ptyfast.models.ptychonet:PtychoNet",
               "DCGAN-style 4×4 stride-2 encoder/decoder, DCGAN widths 64–512 (5,510,850 parameters)",
               "Guan & Tsai, BMVC 2019")


def get_entry(name: str) -> ModelEntry:
    key = name.lower()
    if key not in REGISTRY:
        raise InputError(f"unknown model '{name}'; registered models are: {', '.join(sorted(REGISTRY))}.")
    return REGISTRY[key]


def build_model(name: str):
    return get_entry(name).build()


def count_parameters(module) -> int:
    return sum(p.numel() for p in module.parameters())


__all__ = ["Manifest", "ModelEntry", "REGISTRY", "register_model", "get_entry", "build_model", "count_parameters"]
