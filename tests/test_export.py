"""The export stage: ONNX export + parity for every architecture, metadata, INT8/fp16, CLI, TensorRT keys.

Real ONNX Runtime sessions on randomly initialised networks (seeded); no mocks. TensorRT builds run only where
``tensorrt`` imports and a GPU is visible (skipped with the reason otherwise).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from dataclasses import asdict

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="exporting needs torch (the train extra)")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from cli_helpers import app, runner  # noqa: E402
from ptyfast.errors import InputError  # noqa: E402
from ptyfast.export import tensorrt_engine as te  # noqa: E402
from ptyfast.export.onnx_export import OPSET, export_onnx, parity_check  # noqa: E402
from ptyfast.export.quantize import compare_models, convert_float, quantize_int8  # noqa: E402
from ptyfast.export.samples import simulated_patterns  # noqa: E402
from ptyfast.models import build_model, get_entry  # noqa: E402
from model_helpers import random_checkpoint  # noqa: E402
from ptyfast.models.checkpoint import save_checkpoint  # noqa: E402
from ptyfast.models.pretrained import read_onnx_manifest, resolve_model, shipped_models  # noqa: E402

import ptyfast.cli.cmd_export  # noqa: E402,F401  (registers the commands on ``app``)
import ptyfast.cli.cmd_models  # noqa: E402,F401
from cli_helpers import one_error_line  # noqa: E402

BATCHES = {"ptynet-s": (1, 8), "ptychonn": (1, 8), "ptychonn-recipe": (1, 8), "ptynet-b": (1, 4)}


def one_line_error(result, fragment: str) -> None:
    one_error_line(result, fragment)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """``exported(arch)`` → (model, manifest, checkpoint path, OnnxExport), built once per module."""
    cache: dict = {}

    def get(arch: str):
        if arch not in cache:
            folder = tmp_path_factory.mktemp(arch)
            ckpt, model, manifest = random_checkpoint(folder / f"{arch}.pt", arch,
                                                      training={"data": "none (random init, test)"})
            info = export_onnx(model, manifest, folder / f"{arch}.onnx")
            cache[arch] = (model, manifest, ckpt, info)
        return cache[arch]

    return get


@pytest.mark.parametrize("arch", ["ptynet-s", "ptychonn", "ptychonn-recipe",
                                  pytest.param("ptynet-b", marks=pytest.mark.slow)])
def test_onnx_parity_all_architectures(exported, arch):
    model, manifest, _, info = exported(arch)
    report = parity_check(model, info.path, manifest, batches=BATCHES[arch])
    kinds = {(c.inputs, c.batch) for c in report.cases}
    assert kinds == {(k, b) for k in ("random", "simulated") for b in BATCHES[arch]}
    assert report.passed, report.to_dict()
    assert report.max_abs < 1e-5 and report.mean_abs < 1e-6
    print(f"{arch}: max {report.max_abs:.2e} mean {report.mean_abs:.2e} ({info.exporter}, {info.seconds:.1f} s)")


def test_onnx_graph_contract(exported):
    _, manifest, _, info = exported("ptynet-s")
    proto = onnx.load(str(info.path))
    onnx.checker.check_model(proto, full_check=True)
    assert [o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")] == [OPSET]
    (inp,) = proto.graph.input
    assert inp.name == "diffraction" and inp.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    dims = inp.type.tensor_type.shape.dim
    assert dims[0].dim_param and [d.dim_value for d in dims[1:]] == [1, *manifest.input_size]
    assert [o.name for o in proto.graph.output] == ["amplitude", "phase"]
    for out in proto.graph.output:
        assert out.type.tensor_type.shape.dim[0].dim_param and len(out.type.tensor_type.shape.dim) == 3
    # one self-contained file: no external-data tensors, nothing beside it but the checkpoint and its manifest
    assert not any(t.data_location == onnx.TensorProto.EXTERNAL for t in proto.graph.initializer)
    assert sorted(p.name for p in info.path.parent.iterdir()) == ["ptynet-s.json", "ptynet-s.onnx", "ptynet-s.pt"]


def test_metadata_round_trip(exported):
    _, manifest, _, info = exported("ptynet-s")
    props = {p.key: p.value for p in onnx.load(str(info.path)).metadata_props}
    assert props["ptyfast.architecture"] == "ptynet-s" and props["ptyfast.input_size"] == "128x128"
    assert props["ptyfast.precision"] == "fp32" and props["ptyfast.opset"] == str(OPSET)
    back = read_onnx_manifest(info.path)
    want = asdict(manifest)
    got = asdict(back)
    assert got.pop("ptyfast_version") and want.pop("ptyfast_version") == ""
    assert got == want
    source = resolve_model(info.path)
    assert source.onnx == info.path and source.manifest == back and source.checkpoint is None


def test_fresh_session_without_torch(exported, tmp_path):
    """The inference path (resolve → ONNX Runtime backend → run) never imports torch."""
    model, manifest, _, info = exported("ptynet-s")
    x = simulated_patterns(3, manifest, seed=7)
    np.save(tmp_path / "x.npy", x)
    with torch.no_grad():
        np.save(tmp_path / "amp.npy", model(torch.from_numpy(x))[0].numpy())
    script = textwrap.dedent(f"""
        import sys
        import numpy as np
        from ptyfast.runtime.backends import open_backend
        backend, reason = open_backend({str(info.path)!r}, backend="auto", device="cpu")
        amp, phase = backend(np.load({str(tmp_path / 'x.npy')!r}))
        err = float(np.abs(amp - np.load({str(tmp_path / 'amp.npy')!r})).max())
        assert "torch" not in sys.modules, "torch was imported"
        print(reason, backend.name, amp.shape, err)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PTYFAST_CACHE": str(tmp_path / "cache")})
    assert out.returncode == 0, out.stderr
    reason, name, *_, err = out.stdout.split()
    assert reason.startswith("onnxruntime-cpu") and float(err) < 1e-5


def test_int8_runs_and_is_close_to_fp32(exported, tmp_path):
    _, manifest, _, info = exported("ptynet-s")
    q = quantize_int8(info.path, tmp_path / "s.int8.onnx", n_calibration=32)
    proto = onnx.load(str(q.path))
    ops = {n.op_type for n in proto.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Conv", "ConvTranspose"} <= ops
    # Conv-only by default: no ConvTranspose weight is quantised (ORT's grouped ConvTranspose bug)
    deq_out = {n.output[0] for n in proto.graph.node if n.op_type == "DequantizeLinear"}
    assert all(n.input[1] not in deq_out for n in proto.graph.node if n.op_type == "ConvTranspose")
    props = {p.key: p.value for p in proto.metadata_props}
    assert props["ptyfast.precision"] == "int8" and json.loads(props["ptyfast.quantization"])["op_types"] == ["Conv"]
    assert read_onnx_manifest(q.path).architecture == "ptynet-s"
    acc = compare_models(info.path, q.path, simulated_patterns(16, manifest, seed=11), manifest)
    assert acc["psnr_amplitude"] > 30 and acc["psnr_phase"] > 30, acc
    assert acc["max_abs_amplitude"] < 0.05 and acc["max_abs_phase"] < 0.2, acc


def test_fp16_onnx_keeps_fp32_io_and_is_close(exported, tmp_path):
    _, manifest, _, info = exported("ptychonn")
    c = convert_float(info.path, tmp_path / "c.fp16.onnx", "fp16")
    proto = onnx.load(str(c.path))
    assert proto.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert all(o.type.tensor_type.elem_type == onnx.TensorProto.FLOAT for o in proto.graph.output)
    assert any(i.data_type == onnx.TensorProto.FLOAT16 for i in proto.graph.initializer)
    acc = compare_models(info.path, c.path, simulated_patterns(4, manifest, seed=3), manifest)
    assert acc["max_abs_amplitude"] < 1e-2 and acc["psnr_phase"] > 40, acc


def test_cli_export_onnx_int8(exported, tmp_path):
    _, _, ckpt, _ = exported("ptynet-s")
    result = runner.invoke(app, ["export", str(ckpt), "--format", "onnx", "--precision", "int8",
                                 "-o", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert result.stdout.count("validated") == 2 and "PSNR vs fp32" in result.stdout
    assert (tmp_path / "out" / "ptynet-s.onnx").is_file() and (tmp_path / "out" / "ptynet-s.int8.onnx").is_file()
    report = json.loads((tmp_path / "out" / "ptynet-s.export.json").read_text())
    assert report["parity"]["passed"] and report["converted"]["status"] == "validated"


# -- bad input -----------------------------------------------------------------------------------------------


def test_unknown_format_is_one_line(exported, tmp_path):
    _, _, ckpt, _ = exported("ptynet-s")
    one_line_error(runner.invoke(app, ["export", str(ckpt), "--format", "tflite", "-o", str(tmp_path)]),
                   "unknown export format 'tflite'")
    one_line_error(runner.invoke(app, ["export", str(ckpt), "--precision", "int4", "-o", str(tmp_path)]),
                   "unknown precision 'int4'")
    one_line_error(runner.invoke(app, ["export", str(ckpt), "--batch", "8:4:2", "-o", str(tmp_path)]),
                   "MIN:OPT:MAX")


def test_corrupt_checkpoint_is_one_line(tmp_path):
    bad = tmp_path / "broken.pt"
    bad.write_bytes(b"not a checkpoint at all" * 10)
    one_line_error(runner.invoke(app, ["export", str(bad), "-o", str(tmp_path)]), "corrupt")
    # a zip (so it looks like torch) that is not a ptyfast checkpoint, with no manifest beside it
    torch.save({"weights": torch.zeros(3)}, tmp_path / "foreign.pt")
    one_line_error(runner.invoke(app, ["export", str(tmp_path / "foreign.pt"), "-o", str(tmp_path)]),
                   "not a ptyfast checkpoint")


def test_checkpoint_of_another_architecture(tmp_path):
    torch.manual_seed(0)
    path = save_checkpoint(tmp_path / "mixed.pt", build_model("ptychonn"), get_entry("ptynet-s").manifest())
    one_line_error(runner.invoke(app, ["export", str(path), "-o", str(tmp_path)]),
                   "does not fit the 'ptynet-s' architecture")


def test_unknown_and_missing_models(tmp_path):
    with pytest.raises(InputError, match="shipped models are: ptynet-s"):
        resolve_model("ptynet-xl")
    with pytest.raises(InputError, match="without shipped weights"):
        resolve_model("ptynet-b")
    with pytest.raises(InputError, match="does not exist"):
        resolve_model(tmp_path / "nope.onnx")
    (tmp_path / "garbage.onnx").write_bytes(b"\x00\x01garbage")
    with pytest.raises(InputError, match="not a readable ONNX file"):
        resolve_model(tmp_path / "garbage.onnx")
    if dict(shipped_models(include_missing=True))["ptynet-s"] is None:  # until the trained weights ship
        one_line_error(runner.invoke(app, ["export", "-o", str(tmp_path)]), "not present yet")


def _tensorrt_expected_error() -> str | None:
    if te.tensorrt_version() is None:
        return "TensorRT is not installed"
    if te.gpu_info() is None:
        return "no NVIDIA GPU"
    return None


def test_tensorrt_without_tensorrt_or_gpu(exported, tmp_path):
    fragment = _tensorrt_expected_error()
    if fragment is None:
        pytest.skip("TensorRT and a GPU are present: the engine tests below cover this machine")
    _, _, ckpt, _ = exported("ptynet-s")
    one_line_error(runner.invoke(app, ["export", str(ckpt), "--format", "tensorrt", "-o", str(tmp_path)]), fragment)
    assert not any(tmp_path.glob("*.onnx")), "nothing is written before the TensorRT check"
    out = subprocess.run([sys.executable, "-m", "ptyfast", "export", str(ckpt), "--format", "tensorrt",
                          "-o", str(tmp_path)], capture_output=True, text=True, timeout=120)
    one_error_line(out, fragment)


def test_cli_models_lists_architectures():
    result = runner.invoke(app, ["models"])
    assert result.exit_code == 0, result.output
    for name, count in (("ptynet-s", "324,452"), ("ptychonn", "1,247,074"), ("ptynet-b", "20,595,854")):
        assert name in result.stdout and count in result.stdout
    assert "Shipped weights" in result.stdout


# -- TensorRT engine cache logic (pure) and engines (where TensorRT exists) ------------------------------------


def test_batch_profile_parsing():
    assert te.parse_batch("1:64:256") == (1, 64, 256)
    assert te.parse_batch("32") == (1, 32, 32)
    assert te.parse_batch(None) == te.DEFAULT_BATCH
    for bad in ("0:1:2", "4:2:8", "a:b:c", "1:2"):
        with pytest.raises(InputError, match="MIN:OPT:MAX"):
            te.parse_batch(bad)


def test_engine_key_and_sidecar(exported, tmp_path):
    _, manifest, _, info = exported("ptynet-s")
    key = te.engine_key(info.path, precision="fp16", batch=(1, 8, 32), input_size=(128, 128),
                        trt_version="10.13.0", gpu=("NVIDIA H100 80GB HBM3", "9.0"))
    assert key["onnx_sha256"] and te.key_mismatch(key, dict(key)) == []
    moved = dict(key, gpu="NVIDIA A100", tensorrt="11.4.0")
    diff = te.key_mismatch(key, moved)
    assert len(diff) == 2 and any(d.startswith("gpu:") for d in diff)
    (tmp_path / "x.engine").write_bytes(b"\x00")
    with pytest.raises(InputError, match="no sidecar"):
        te.read_sidecar(tmp_path / "x.engine")
    (tmp_path / "x.json").write_text("{not json")
    with pytest.raises(InputError, match="not valid JSON"):
        te.read_sidecar(tmp_path / "x.engine")
    (tmp_path / "x.json").write_text(json.dumps({"format": te.SIDECAR_FORMAT, "key": key,
                                                 "manifest": json.loads(manifest.to_json())}))
    assert te.read_sidecar(tmp_path / "x.engine")["key"] == key
    assert resolve_model(tmp_path / "x.engine").manifest.architecture == "ptynet-s"


@pytest.fixture
def tensorrt_gpu():
    pytest.importorskip("tensorrt", reason="TensorRT is not installed (it only installs from NVIDIA's index)")
    if te.gpu_info() is None:
        pytest.skip("TensorRT is installed but no NVIDIA GPU is visible")


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_tensorrt_engine_build_cache_and_stale_key(tensorrt_gpu, exported, tmp_path, precision):
    _, manifest, _, info = exported("ptynet-s")
    engine = tmp_path / f"s.{precision}.engine"
    built = te.build_engine(info.path, engine, manifest=manifest, precision=precision, batch=(1, 4, 8))
    assert engine.is_file() and built.key["precision"] == precision and any(tmp_path.glob("timing-*.cache"))
    x = simulated_patterns(6, manifest, seed=5)
    runner_ = te.TensorRTRunner(engine)
    got = runner_(x)
    runner_.close()
    want = ort.InferenceSession(str(info.path), providers=["CPUExecutionProvider"]).run(None, {"diffraction": x})
    tol = 2e-3 if precision == "fp32" else 3e-2  # TF32 / fp16
    assert max(float(np.abs(g - w).max()) for g, w in zip(got, want)) < tol
    assert te.ensure_engine(engine, onnx_path=info.path, manifest=manifest, precision=precision)[1] == "cached"
    # a foreign engine (other GPU in its key) is rebuilt when the ONNX is at hand, refused when it is not
    sidecar = engine.with_suffix(".json")
    payload = json.loads(sidecar.read_text())
    payload["key"]["gpu"] = "some other GPU"
    sidecar.write_text(json.dumps(payload))
    with pytest.raises(InputError, match="another setup"):
        te.ensure_engine(engine, onnx_path=None, manifest=manifest, precision=precision)
    _, what = te.ensure_engine(engine, onnx_path=info.path, manifest=manifest, precision=precision)
    assert what.startswith("rebuilt: gpu")
