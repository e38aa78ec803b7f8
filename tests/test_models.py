"""Model registry, architectures (parameter counts from the papers), checkpoints, metrics."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from ptyfast.errors import InputError  # noqa: E402
from ptyfast.models import build_model, count_parameters, get_entry  # noqa: E402
from ptyfast.models.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402


def test_ptynet_s_has_the_papers_parameter_count():
    # Pan et al. 2023: "325 thousand"; the reference code's layer table gives exactly 324,452.
    assert count_parameters(build_model("ptynet-s-paper")) == 324_452
    # ptyfast's default adds BatchNorm (2 × 674 affine parameters) to the same layers.
    assert count_parameters(build_model("ptynet-s")) == 325_800


def test_ptychonn_is_within_two_percent_of_1_25_million():
    # Cherukara et al. 2020 reference code: 1,247,074 parameters at any input size.
    n = count_parameters(build_model("ptychonn"))
    assert abs(n - 1.25e6) / 1.25e6 < 0.02
    # ptyfast's recipe adds BatchNorm (2 × 1,472 affine parameters) to the same layers.
    assert count_parameters(build_model("ptychonn-recipe")) == n + 2 * 1_472


def test_ptychonet_has_dcgan_widths_and_the_papers_count():
    # DCGAN widths 64-512 give 5,510,850: the 5,512 k the seed paper's Table 1 prints (in PtychoNN's row).
    net = build_model("ptychonet")
    assert count_parameters(net) == 5_510_850
    assert net.ADAM_BETAS == (0.5, 0.999)


def test_ptynet_b_size_is_reported_close_to_reference():
    # The reference code's PtyNet-B has ≈20.66 M parameters; ours follows its block description.
    n = count_parameters(build_model("ptynet-b"))
    assert 19.5e6 < n < 21.5e6


@pytest.mark.parametrize("name", ["ptynet-s", "ptynet-s-paper", "ptychonn", "ptychonn-recipe", "ptychonet",
                                  "ptynet-b"])
def test_heads_are_bounded(name):
    torch.manual_seed(0)
    model = build_model(name).eval()
    x = torch.rand(2, 1, 128, 128) * 50  # far outside the normalised range: heads must still be bounded
    with torch.no_grad():
        amp, phase = model(x)
    assert amp.shape == phase.shape == (2, 128, 128)
    assert float(amp.min()) >= 0 and float(amp.max()) <= (2 if name in ("ptynet-s", "ptychonn-recipe") else 1)
    assert float(phase.abs().max()) <= np.pi


def test_unknown_model_name_is_a_clear_error():
    with pytest.raises(InputError, match="unknown model 'ptynet-x'.*ptynet-s"):
        get_entry("ptynet-x")


def test_checkpoint_round_trip_and_foreign_architecture(tmp_path):
    model = build_model("ptynet-s")
    manifest = get_entry("ptynet-s").manifest(probe_photons=1000.0)
    path = save_checkpoint(tmp_path / "m.pt", model, manifest)
    assert path.with_suffix(".json").exists()
    loaded, m2 = load_checkpoint(path, architecture="ptynet-s")
    assert m2.architecture == "ptynet-s" and m2.probe_photons == 1000.0
    for a, b in zip(model.state_dict().values(), loaded.state_dict().values()):
        assert torch.equal(a, b)
    with pytest.raises(InputError, match="holds a 'ptynet-s' model, not 'ptychonn'"):
        load_checkpoint(path, architecture="ptychonn")


def test_checkpoint_that_does_not_fit_its_architecture(tmp_path):
    other = build_model("ptychonn")
    path = save_checkpoint(tmp_path / "wrong.pt", other, get_entry("ptynet-s").manifest())
    with pytest.raises(InputError, match="does not fit the 'ptynet-s' architecture"):
        load_checkpoint(path)


def test_corrupt_checkpoint(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint at all")
    with pytest.raises(InputError, match="corrupt"):
        load_checkpoint(bad)
