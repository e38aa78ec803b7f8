"""Never lose a user's data: outputs over inputs, signals, full disks, permissions, bad probes, missing
storage, absurd positions and honest messages. Real files, real subprocesses, real signals, a real full file
system (a small tmpfs when root may mount one, RLIMIT_FSIZE otherwise)."""

from __future__ import annotations

import hashlib
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from cli_helpers import assert_one_line_error, one_error_line
from cli_helpers import app, runner

ROOT = Path(__file__).resolve().parents[1]


def run(*args, env=None):
    return runner.invoke(app, [str(a) for a in args], env=env)


def digest(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in Path(folder).iterdir() if ".tmp-" in p.name)


def cli(*args, cwd=None, preexec_fn=None, env=None, timeout=300):
    return subprocess.run([sys.executable, "-m", "ptyfast", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, preexec_fn=preexec_fn, env=env, timeout=timeout)


@pytest.fixture
def scan128(tmp_path) -> Path:
    """A small simulated scan for the shipped model (128² frames, default probe, 16 frames)."""
    out = tmp_path / "scan.cxi"
    r = run("simulate", "--random-object", "--size", "256", "-o", out)
    assert r.exit_code == 0, r.output
    return out


@pytest.fixture
def images(tmp_path) -> tuple[Path, Path]:
    from PIL import Image

    rng = np.random.default_rng(0)
    paths = []
    for name in ("amp.png", "pha.png"):
        p = tmp_path / name
        Image.fromarray(rng.integers(0, 255, (64, 64), dtype=np.uint8)).save(p)
        paths.append(p)
    return tuple(paths)


@pytest.fixture
def model_pt(tmp_path) -> Path:
    src = ROOT / "ptyfast" / "data" / "ptynet-s.pt"
    dst = tmp_path / "m.pt"
    shutil.copy(src, dst)
    shutil.copy(src.with_suffix(".json"), dst.with_suffix(".json"))
    return dst


# -- 1. no command writes over a file it reads -------------------------------------------------------------------


def sweep_cases(tmp_path, scan, images, model_pt, recon):
    """(command line, the input it targets): every command whose -o/--json can name one of its inputs."""
    amp, pha = images
    probe = tmp_path / "probe.npy"
    np.save(probe, np.load(ROOT / "ptyfast" / "data" / "probe_confined128.npy"))
    return [
        (["simulate", amp, pha, "-o", amp], amp),
        (["simulate", amp, pha, "-o", pha], pha),
        (["simulate", "--random-object", "--probe", probe, "-o", probe], probe),
        (["convert", scan, "-o", scan], scan),
        (["reconstruct", scan, "-o", scan], scan),
        (["reconstruct", scan, "--model", model_pt, "-o", model_pt], model_pt),
        (["refine", scan, "-o", scan], scan),
        (["refine", scan, "--init", recon, "-o", recon], recon),
        (["evaluate", recon, "--truth", scan, "--json", scan], scan),
        (["evaluate", recon, "--truth", scan, "--json", recon], recon),
        (["bench", "--model", model_pt, "--json", model_pt], model_pt),
        (["finetune", scan, "--model", model_pt, "-o", model_pt], model_pt),
        (["finetune", scan, "-o", scan], scan),
        (["export", model_pt, "-o", model_pt], model_pt),
        (["train", amp, "-o", amp], amp),
        (["train", "--init-from", model_pt, "-o", model_pt], model_pt),
        (["demo", "-o", scan], scan),
    ]


def test_every_command_refuses_to_write_over_its_inputs(tmp_path, scan128, images, model_pt):
    recon = tmp_path / "recon.h5"
    assert run("reconstruct", scan128, "-o", recon, "--no-png").exit_code == 0
    cases = sweep_cases(tmp_path, scan128, images, model_pt, recon)
    commands = {c[0][0] for c in cases}
    assert commands >= {"simulate", "convert", "reconstruct", "refine", "evaluate", "bench", "finetune", "export",
                        "train", "demo"}  # every command with an output (info and models write nothing)
    before = {p: digest(p) for p in tmp_path.iterdir() if p.is_file()}
    for args, target in cases:
        r = run(*args)
        assert r.exit_code == 2, (args, r.output)
        line = r.stderr.strip().splitlines()
        assert len(line) == 1 and line[0].startswith("error:") and "Traceback" not in r.output, (args, r.stderr)
        assert digest(target) == before[target], args
    after = {p: digest(p) for p in tmp_path.iterdir() if p.is_file()}
    assert after == before  # nothing changed, nothing new (no temporary files either)


def test_links_to_an_input_are_the_input(tmp_path, scan128):
    soft, hard = tmp_path / "soft.cxi", tmp_path / "hard.cxi"
    soft.symlink_to(scan128)
    os.link(scan128, hard)
    h = digest(scan128)
    for out in (soft, hard):
        assert_one_line_error(run("convert", scan128, "-o", out), "same file as input")
        assert_one_line_error(run("refine", scan128, "-n", "1", "-o", out), "would overwrite an input")
    assert digest(scan128) == h and soft.is_symlink()


def test_reconstruct_refuses_a_preview_name_that_is_an_input(tmp_path, scan128):
    """reconstruct's PNG previews are named after -o: one that is an input (here a hard link to the scan, so the
    same inode) is refused in one sentence, and nothing is written, neither the reconstruction nor a preview
    (the first preview written, and the last)."""
    previews = [tmp_path / f"r_{name}.png" for name in ("amplitude", "consistency")]
    for victim in previews:
        os.link(scan128, victim)
        h = digest(scan128)
        r = cli("reconstruct", scan128, "-o", tmp_path / "r.h5")
        line = one_error_line(r, "would overwrite an input")
        assert victim.name in line and scan128.name in line, line
        assert digest(scan128) == h and victim.stat().st_ino == scan128.stat().st_ino
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["scan.cxi", victim.name]), leftovers(tmp_path)
        victim.unlink()


# -- 2. signals -------------------------------------------------------------------------------------------------


def _big_cxi(path: Path, n: int = 1500) -> Path:
    from ptyfast.physics.probe import default_probe
    from ptyfast.physics.scanpath import raster_positions
    from ptyfast.scan import Scan
    from ptyfast.io import write_cxi

    probe = default_probe()
    side = int(np.ceil(np.sqrt(n)))
    pos = raster_positions((32 * side + 128, 32 * side + 128), probe.shape, overlap=0.75)[:n]
    rng = np.random.default_rng(0)
    frames = rng.poisson(5.0, (len(pos), 128, 128)).astype(np.float32)
    return write_cxi(path, Scan(diffraction=frames, positions=pos, probe=probe))


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT])
def test_signal_while_writing_leaves_nothing(tmp_path, sig):
    """The signal arrives while the temporary output exists: it is removed, the exit status says why."""
    src = _big_cxi(tmp_path / "big.cxi")
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    h = digest(src)
    proc = subprocess.Popen([sys.executable, "-m", "ptyfast", "convert", str(src), "-o", str(out_dir / "c.cxi")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    t0 = time.monotonic()
    while not leftovers(out_dir) and proc.poll() is None and time.monotonic() - t0 < 120:
        time.sleep(0.002)
    assert leftovers(out_dir), "the temporary file never appeared"
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == (130 if sig == signal.SIGINT else 128 + sig), err
    assert "Traceback" not in err and "partial outputs removed" in err
    assert list(out_dir.iterdir()) == [], err
    assert digest(src) == h


def _sparse_cxi(path: Path, n: int = 196, step: float = 128.0) -> Path:
    """``n`` frames of noise on a raster of windows that do not overlap: a large object for few frames, so
    writing the reconstruction and its previews takes a while."""
    from ptyfast.physics.probe import default_probe
    from ptyfast.scan import Scan
    from ptyfast.io import write_cxi

    side = int(np.ceil(np.sqrt(n)))
    pos = (np.stack(np.mgrid[:side, :side], -1).reshape(-1, 2) * step)[:n].astype(float)
    frames = np.random.default_rng(0).poisson(5.0, (n, 128, 128)).astype(np.float32)
    return write_cxi(path, Scan(diffraction=frames, positions=pos, probe=default_probe()))


@pytest.mark.quality
def test_sigterm_during_reconstructs_write_leaves_nothing(tmp_path):
    """SIGTERM while reconstruct writes its output (sent as soon as the first temporary file appears in the output
    folder; 196 frames on a 1,920² object: the write and the previews take about a second here): exit 143, the
    temporary files removed, no output, the input untouched."""
    src = _sparse_cxi(tmp_path / "sparse.cxi")
    h = digest(src)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    proc = subprocess.Popen([sys.executable, "-m", "ptyfast", "reconstruct", str(src), "-o", str(out_dir / "r.h5"),
                             "--allow-probe-mismatch"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    t0 = time.monotonic()
    while not leftovers(out_dir) and proc.poll() is None and time.monotonic() - t0 < 300:
        time.sleep(0.002)
    seen = leftovers(out_dir)
    assert seen, ("the temporary output never appeared", proc.poll(), sorted(p.name for p in out_dir.iterdir()))
    proc.terminate()
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    assert "Traceback" not in err and "partial outputs removed" in err, err
    assert list(out_dir.iterdir()) == [], (seen, sorted(p.name for p in out_dir.iterdir()))
    assert digest(src) == h and sorted(p.name for p in tmp_path.iterdir()) == ["out", "sparse.cxi"]


# -- 3. full disks ----------------------------------------------------------------------------------------------


@pytest.fixture
def full_disk(tmp_path):
    """(folder, preexec_fn): a 1 MiB tmpfs when we may mount one, else a 512 KiB RLIMIT_FSIZE."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    ok = os.geteuid() == 0 and subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)],
                                              capture_output=True).returncode == 0
    if ok:
        yield mnt, None, "no space left on"
        subprocess.run(["umount", str(mnt)], capture_output=True)
    else:
        def limit():
            resource.setrlimit(resource.RLIMIT_FSIZE, (512 * 1024, 512 * 1024))

        yield mnt, limit, "file-size limit"


@pytest.mark.parametrize("command", [["convert"], ["reconstruct"], ["refine", "-n", "2"]])
def test_full_disk_is_one_sentence_and_leaves_nothing(tmp_path, scan128, full_disk, command):
    folder, preexec, fragment = full_disk
    big = _big_cxi(tmp_path / "big.cxi", n=200)  # its outputs are all well above the 1 MiB of the disk
    h = digest(big)
    out = folder / ("o.cxi" if command[0] == "convert" else "o.h5")
    proc = cli(command[0], big, *command[1:], "-o", out, preexec_fn=preexec)
    assert str(folder) in one_error_line(proc, fragment, code=1)
    assert list(folder.iterdir()) == [] and digest(big) == h


def test_full_temporary_disk_while_keeping_patches_is_one_sentence(tmp_path, scan128, full_disk):
    """The patches kept for the phase-offset solve go to an unlinked file in TMPDIR; when that disk is full the
    run stops with one sentence naming it and the remedies, and writes nothing."""
    folder, preexec, fragment = full_disk
    big = _big_cxi(tmp_path / "big.cxi", n=200)  # 200 patches × 63 kB kept: well above the 1 MiB of the disk
    h = digest(big)
    out = tmp_path / "o.h5"
    env = {**os.environ, "TMPDIR": str(folder), "PTYFAST_PATCH_MEMORY_MB": "0.5"}  # spill from the first MiB
    proc = cli("reconstruct", big, "-o", out, preexec_fn=preexec, env=env)
    line = one_error_line(proc, fragment, code=1)
    assert str(folder) in line and "--no-align-phase" in line and "TMPDIR" in line
    # the spill file is unlinked from its creation; ONNX Runtime's telemetry leaves files of its own in TMPDIR (a
    # session id .ses with 1.32 here; which ones depends on its version and machine), so only ptyfast's are checked
    assert not out.exists() and not [p for p in folder.iterdir() if "ptyfast" in p.name] and digest(big) == h
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_file()) == ["big.cxi", "scan.cxi"]


# -- 4. permissions ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mask", [0o022, 0o077, 0o002])
def test_outputs_get_umask_permissions(tmp_path, scan128, mask):
    old = os.umask(mask)
    try:
        out = tmp_path / f"r{mask:o}.h5"
        assert run("reconstruct", scan128, "-o", out).exit_code == 0
        assert run("evaluate", out, "--truth", scan128, "--json", tmp_path / f"q{mask:o}.json").exit_code == 0
        assert run("convert", scan128, "-o", tmp_path / f"c{mask:o}.cxi").exit_code == 0
        made = [out, tmp_path / f"q{mask:o}.json", tmp_path / f"c{mask:o}.cxi", *tmp_path.glob(f"r{mask:o}_*.png")]
        assert len(made) >= 5
        for p in made:
            assert p.stat().st_mode & 0o777 == 0o666 & ~mask, (p, oct(p.stat().st_mode))
    finally:
        os.umask(old)


# -- 5. probes --------------------------------------------------------------------------------------------------


def _with_probe(src: Path, dst: Path, probe: np.ndarray) -> Path:
    shutil.copy(src, dst)
    with h5py.File(dst, "r+") as f:
        del f["entry_1/instrument_1/source_1/illumination"]
        f["entry_1/instrument_1/source_1/illumination"] = probe
    return dst


@pytest.mark.parametrize("bad, fragment", [("nan", "NaN or Inf"), ("inf", "NaN or Inf"), ("zero", "zero everywhere"),
                                           ("small", "64×64 but the frames are 128×128")])
def test_bad_stored_probes(tmp_path, scan128, bad, fragment):
    p = np.load(ROOT / "ptyfast" / "data" / "probe_confined128.npy")
    probe = {"nan": np.where(np.arange(p.size).reshape(p.shape) == 7, np.nan, p),
             "inf": np.where(np.arange(p.size).reshape(p.shape) == 7, np.inf, p),
             "zero": np.zeros_like(p), "small": p[32:96, 32:96]}[bad]
    scan = _with_probe(scan128, tmp_path / f"{bad}.cxi", probe.astype(np.complex64))
    for args in (["reconstruct", scan, "-o", tmp_path / "r.h5"], ["refine", scan, "-o", tmp_path / "f.h5"],
                 ["convert", scan, "-o", tmp_path / "c.cxi"]):
        assert_one_line_error(run(*args), fragment)
    assert not any(tmp_path.glob("[rfc].*"))


def test_simulate_refuses_a_zero_probe(tmp_path):
    np.save(tmp_path / "zero.npy", np.zeros((128, 128), np.complex64))
    assert_one_line_error(run("simulate", "--random-object", "--probe", tmp_path / "zero.npy", "-o",
                              tmp_path / "s.cxi"), "zero everywhere")
    assert not (tmp_path / "s.cxi").exists()


# -- 6. data stored elsewhere -----------------------------------------------------------------------------------


def _foreign_layout(path: Path, data_kwargs: dict, n: int = 8) -> Path:
    with h5py.File(path, "w") as f:
        f.create_dataset("entry_1/instrument_1/detector_1/data", **data_kwargs)
        f["entry_1/sample_1/geometry_1/translation"] = np.stack(
            [np.arange(n) * 1e-7, np.zeros(n), np.zeros(n)], axis=1)
        f["entry_1/instrument_1/detector_1/distance"] = 2.0
        f["entry_1/instrument_1/detector_1/x_pixel_size"] = 75e-6
        f["entry_1/instrument_1/source_1/wavelength"] = 1e-10
    return path


def test_virtual_dataset_with_a_missing_source_is_refused(tmp_path):
    src = tmp_path / "frames.h5"
    with h5py.File(src, "w") as f:
        f["d"] = np.ones((8, 16, 16), np.float32)
    layout = h5py.VirtualLayout((8, 16, 16), np.float32)
    layout[:] = h5py.VirtualSource(src.name, "d", (8, 16, 16))
    with h5py.File(tmp_path / "vds.cxi", "w") as f:
        f.create_virtual_dataset("entry_1/instrument_1/detector_1/data", layout, fillvalue=0)
    vds = tmp_path / "vds.cxi"
    with h5py.File(vds, "a") as f:
        n = 8
        f["entry_1/sample_1/geometry_1/translation"] = np.stack([np.arange(n) * 1e-7, np.zeros(n), np.zeros(n)], 1)
        f["entry_1/instrument_1/detector_1/distance"] = 2.0
        f["entry_1/instrument_1/detector_1/x_pixel_size"] = 75e-6
        f["entry_1/instrument_1/source_1/wavelength"] = 1e-10
    assert run("info", vds).exit_code == 0  # the source is there: fine
    src.unlink()
    for args in (["info", vds], ["convert", vds, "-o", tmp_path / "c.cxi"]):
        assert_one_line_error(run(*args), "source file")
    assert not (tmp_path / "c.cxi").exists()


def test_truncated_external_storage_is_refused(tmp_path):
    raw = tmp_path / "frames.raw"
    np.ones((8, 16, 16), np.float32).tofile(raw)
    cxi = _foreign_layout(tmp_path / "ext.cxi", dict(shape=(8, 16, 16), dtype=np.float32,
                                                     external=[(raw.name, 0, 8 * 16 * 16 * 4)]))
    cwd = os.getcwd()
    os.chdir(tmp_path)  # HDF5 resolves relative external names against the working directory
    try:
        assert run("info", cxi).exit_code == 0
        with open(raw, "r+b") as fh:
            fh.truncate(3 * 16 * 16 * 4)
        assert_one_line_error(run("convert", cxi, "-o", tmp_path / "c.cxi"), "truncated")
        raw.unlink()
        assert_one_line_error(run("info", cxi), "missing")
    finally:
        os.chdir(cwd)
    assert not (tmp_path / "c.cxi").exists()


# -- 7. positions -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [1e7, 1e300, -1e8])
def test_absurd_positions_are_refused_before_any_allocation(tmp_path, scan128, value):
    bad = tmp_path / "bad.cxi"
    shutil.copy(scan128, bad)
    with h5py.File(bad, "r+") as f:
        d = f["entry_1/ptyfast/positions_px"]
        p = d[()]
        p[3, 1] = value
        d[...] = p
    for args in (["reconstruct", bad, "-o", tmp_path / "r.h5"], ["refine", bad, "-o", tmp_path / "f.h5"],
                 ["info", bad]):
        assert_one_line_error(run(*args), "PTYFAST_MAX_OBJECT_PIXELS")


def test_object_size_limit_can_be_raised_and_lowered(tmp_path, scan128):
    r = run("info", scan128, env={"PTYFAST_MAX_OBJECT_PIXELS": "1000"})
    assert_one_line_error(r, "position")
    assert run("info", scan128, env={"PTYFAST_MAX_OBJECT_PIXELS": "1e6"}).exit_code == 0


# -- 8. honest results and messages ---------------------------------------------------------------------------


def test_refined_reconstruction_reports_its_own_consistency(tmp_path, scan128):
    from ptyfast.io import load_any
    from ptyfast.runtime.output import read_reconstruction
    from ptyfast.runtime.consistency import data_consistency

    out = tmp_path / "nn_rpie.h5"
    r = run("reconstruct", scan128, "--refine", "rpie", "--iterations", "20", "-o", out, "--no-png")
    assert r.exit_code == 0, r.output
    rec = read_reconstruction(out)
    own = data_consistency(load_any(scan128), rec["object"], rec["probe"], rec["positions"])
    assert rec["consistency"]["error"] == pytest.approx(own.error, rel=1e-4)
    net = rec["provenance"]["refine"]["network_consistency"]
    assert own.error < net  # rPIE from the network's start fits the data better than the network alone
    assert f"{own.error:.4f}" in r.stdout


def test_evaluate_reads_refine_output(tmp_path, scan128):
    out = tmp_path / "ref.h5"
    assert run("refine", scan128, "-n", "5", "-o", out, "--no-png").exit_code == 0
    r = run("evaluate", out, "--truth", scan128, "--json", tmp_path / "q.json")
    assert r.exit_code == 0, r.output
    import json

    q = json.loads((tmp_path / "q.json").read_text())
    assert q["reconstruction"]["phase_psnr"] > q["flat"]["phase_psnr"]


def test_finetune_fit_crop_works(tmp_path):
    from ptyfast.physics.probe import fresnel_probe

    np.save(tmp_path / "p160.npy", fresnel_probe((160, 160), pixel_size=1e-6 / 160, photons=1e6))
    scan = tmp_path / "s160.cxi"
    assert run("simulate", "--random-object", "--size", "300", "--probe", tmp_path / "p160.npy", "-o", scan).exit_code == 0
    assert_one_line_error(run("finetune", scan, "--epochs", "1", "-o", tmp_path / "ft"), "--fit crop")
    r = run("finetune", scan, "--fit", "crop", "--epochs", "1", "-o", tmp_path / "ft")
    assert r.exit_code == 0, r.output
    assert (tmp_path / "ft" / "ptynet-s-ft.pt").is_file()


def test_near_field_is_refused_before_any_size_advice(shared_file, tmp_path):
    p25 = shared_file("cdtools-p25-nearfield/PETRAIII_P25_Near_Field_Ptycho.cxi")
    r = run("reconstruct", p25, "-o", tmp_path / "r.h5")
    assert_one_line_error(r, "near-field")
    assert "--fit" not in r.stderr


def test_square_brackets_survive_help_and_errors():
    r = run("simulate", "--help")
    assert "[and phase image]" in " ".join(r.stdout.split())
    assert_one_line_error(run("simulate"), "(amplitude [phase])")


def test_unknown_geometry_is_not_written_as_measured(tmp_path, shared_file):
    tike = shared_file("tike-siemens-star/siemens-star-small.npz.bz2")
    out = tmp_path / "star.cxi"
    assert run("convert", tike, "-o", out).exit_code == 0
    with h5py.File(out, "r") as f:
        assert "entry_1/instrument_1/source_1/wavelength" not in f
        assert "entry_1/instrument_1/detector_1/distance" not in f
        assert f["entry_1/ptyfast"].attrs["geometry"] == "unknown"
    r = run("info", out)
    assert r.exit_code == 0 and "defaults: not in the file" in r.stdout


def test_unsafe_checkpoint_is_called_unsafe(tmp_path, scan128):
    import torch

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    torch.save({"format": "ptyfast-checkpoint", "x": Evil()}, tmp_path / "evil.pt")
    assert_one_line_error(run("reconstruct", scan128, "--model", tmp_path / "evil.pt", "-o", tmp_path / "r.h5"),
                          "refused as unsafe")
    assert_one_line_error(run("export", tmp_path / "evil.pt", "-o", tmp_path / "exported"), "refused as unsafe")
    assert not (tmp_path / "pwned").exists() and not (tmp_path / "exported").exists()


def _edited_model(tmp_path, name, edit) -> Path:
    """The shipped PtyNet-S with ``edit(model)`` applied, saved as a checkpoint with the shipped manifest."""
    import torch

    from ptyfast.models.checkpoint import load_checkpoint, save_checkpoint

    model, manifest = load_checkpoint(ROOT / "ptyfast" / "data" / "ptynet-s.pt")
    with torch.no_grad():
        edit(model)
    return save_checkpoint(tmp_path / f"{name}.pt", model, manifest)


def _last_conv(model):
    import torch

    return [m for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d))][-1]


def test_collapsed_model_gives_a_loud_warning(tmp_path, scan128):
    flat = _edited_model(tmp_path, "flat", lambda m: (_last_conv(m).weight.zero_(), _last_conv(m).bias.zero_()))
    r = run("reconstruct", scan128, "--model", flat, "-o", tmp_path / "r.h5")
    assert r.exit_code == 0, r.output
    assert "warning:" in r.stderr and "the object is flat" in r.stderr
    from PIL import Image

    for name in ("amplitude", "phase"):  # and its previews look flat: one colour, not its rounding noise stretched
        page = np.asarray(Image.open(tmp_path / f"r_{name}.png").convert("RGB"))
        with h5py.File(tmp_path / "r.h5", "r") as f:
            w = f["weight"][()]
        rows = int(np.ptp(np.nonzero(w >= 0.05 * w.max())[0])) + 1
        image = page[:rows].reshape(-1, 3)
        shown = image[(image != [48, 48, 48]).any(axis=1)]  # not the grey of uncovered pixels
        assert len(np.unique(shown, axis=0)) <= 3, name
    ok = run("reconstruct", scan128, "-o", tmp_path / "ok.h5", "--no-png")  # the shipped model: no warning
    assert ok.exit_code == 0 and "warning:" not in ok.stderr


def test_flat_object_is_named_flat_at_any_phase_even_where_it_wraps():
    """The collapse guard's phase spread is circular: a constant phase at ±π (where the angle jumps between
    the two) is as flat as one at 0.5 rad, and a structured phase is not flat anywhere."""
    from ptyfast.runtime.reconstruct import Reconstruction
    from ptyfast.runtime.reconstruct import result_warnings

    rng = np.random.default_rng(0)
    for phase in (0.5, np.pi, -np.pi + 1e-6):
        for spread, flat in ((1e-5, True), (1e-2, False)):
            obj = (0.8 * np.exp(1j * (phase + spread * rng.standard_normal((64, 64))))).astype(np.complex64)
            rec = Reconstruction(object=obj, weight=np.ones((64, 64), np.float32), positions=None, origin=None,
                                 probe=None)
            notes = result_warnings(rec, "m")
            assert bool(notes) == flat, (phase, spread, notes)
            if flat:
                assert "the object is flat" in notes[0] and "phase spread -" not in notes[0]


def test_nan_network_output_is_refused_and_writes_nothing(tmp_path, scan128):
    broken = _edited_model(tmp_path, "nan", lambda m: _last_conv(m).bias.fill_(float("nan")))
    assert_one_line_error(run("reconstruct", scan128, "--model", broken, "-o", tmp_path / "r.h5"), "NaN or Inf")
    assert not list(tmp_path.glob("r*"))
