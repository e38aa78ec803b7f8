"""Every command's --help: grouped in the shared panels, values shown by metavar (no Python types), choices
taken from ``ptyfast.choices``, one meaning per option name across commands, old names still accepted but not
shown, and defaults that agree with the library's."""

from __future__ import annotations

import inspect
import re

import pytest
import typer

from cli_helpers import app, invoke
from ptyfast import choices as choices_module
from ptyfast.choices import (Algorithm, Autocast, Backend, Batching, Choice, Compression, DetectorDtype, Device,
                             ExportFormat, FinetuneLoss, Fit, Freeze, Handoff, InitialObject, Normalisation, Objective,
                             Precision, Scale, ScanPath, Schedule, Simulator, Subset, TrainLoss, Transform, Weighting)
from ptyfast.cli.app import PANELS, Command, plain_help

GROUP = typer.main.get_command(app)
COMMANDS = dict(GROUP.commands)
ENUMS = [e for e in vars(choices_module).values() if isinstance(e, type) and issubclass(e, Choice) and e is not Choice]

#: The options that take one of a fixed set, and the enum it comes from.
OPTION_ENUMS = {
    ("reconstruct", "--backend"): Backend, ("reconstruct", "--device"): Device,
    ("reconstruct", "--precision"): Precision, ("reconstruct", "--fit"): Fit,
    ("reconstruct", "--weighting"): Weighting, ("reconstruct", "--refine"): Algorithm,
    ("reconstruct", "--handoff"): Handoff,
    ("refine", "--algorithm"): Algorithm, ("refine", "--init"): InitialObject, ("refine", "--batching"): Batching,
    ("train", "--amp"): Autocast, ("train", "--simulate"): Simulator, ("train", "--schedule"): Schedule,
    ("train", "--loss"): TrainLoss, ("train", "--transform"): Transform, ("train", "--normalise"): Normalisation,
    ("finetune", "--amp"): Autocast, ("finetune", "--fit"): Fit, ("finetune", "--loss"): FinetuneLoss,
    ("finetune", "--objective"): Objective, ("finetune", "--freeze"): Freeze, ("finetune", "--scale"): Scale,
    ("finetune", "--subset"): Subset,
    ("export", "--precision"): Precision, ("export", "--format"): ExportFormat,
    ("bench", "--backends"): Backend, ("bench", "--precisions"): Precision, ("bench", "--device"): Device,
    ("simulate", "--path"): ScanPath, ("simulate", "--dtype"): DetectorDtype,
    ("convert", "--compression"): Compression,
}

#: Option names with another value form or panel in some command, and why (documented, not renamed).
SAME_NAME_EXCEPTIONS = {
    "--batch": "a batch everywhere, but its panel is its role: inference (reconstruct: Performance), optimiser steps "
               "(train, finetune: Training), mini-batch PIE (refine: Refinement); export's is a TensorRT profile "
               "MIN:OPT:MAX",
    "--seed": "sits with what it seeds: the simulation, the training, the refinement",
    "--loss": "each training command's own losses (train: lit|mse, finetune: l1|poisson)",
    "--precision": "reconstruct adds auto (it can choose at run time); export must build one precision",
}

PYTHON_TYPES = re.compile(r"<(str|int|float|bool|path|list|tuple|dict)\b[^>]*>|\{[a-z_]+\}")


def visible_options(cmd):
    return [p for p in cmd.params if p.param_type_name == "option" and not getattr(p, "hidden", False)]


def names(cmd, param) -> list[str]:
    """The option's names as help shows them (old names left out)."""
    return [o for o in param.opts if o not in cmd.renamed]


def long_name(cmd, param) -> str:
    return next(o for o in names(cmd, param) if o.startswith("--"))


def choice_tokens(metavar: str | None) -> tuple[str, ...]:
    """The literal values in a metavar's ``[a|b|c]``; placeholders (capitals) left out."""
    group = re.search(r"\[([^\]]*)\]", metavar or "")
    return tuple(t for t in group.group(1).split("|") if t and not t.isupper()) if group else ()


def matches(tokens: tuple[str, ...], enum) -> bool:
    values = enum.values()
    return tokens in (values, ("auto", *values), tuple(v for v in values if v != "auto"))


@pytest.fixture(scope="module")
def helps() -> dict[str, str]:
    out = {"": invoke("--help", env={"COLUMNS": "120"})}
    out.update({name: invoke(name, "--help", env={"COLUMNS": "120"}) for name in COMMANDS})
    for name, res in out.items():
        assert res.exit_code == 0, (name, res.output)
    return {name: res.stdout for name, res in out.items()}


def test_every_command_uses_the_shared_layout():
    assert set(COMMANDS) == {"simulate", "info", "convert", "models", "train", "finetune", "export", "reconstruct",
                             "refine", "evaluate", "paper", "bench", "demo"}
    for name, cmd in COMMANDS.items():
        assert isinstance(cmd, Command), name
        for param in visible_options(cmd):
            assert getattr(param, "rich_help_panel", None) in PANELS, (name, param.opts)


def test_help_has_no_python_types_or_markup(helps):
    for name, text in helps.items():
        for bad in ("<str>", "<list[", "{", ":func:", ":class:", "``", "%%"):
            assert bad not in text, (name, bad)
        assert not PYTHON_TYPES.search(text), (name, PYTHON_TYPES.search(text).group(0))


def test_help_is_grouped_in_panels(helps):
    text = helps["reconstruct"]
    sections = re.findall(r"^(\w[\w ]*):$", text, flags=re.M)
    assert sections == ["Arguments", "Input", "Model", "Stitching", "Refinement", "Probe", "Checks", "Live scans",
                        "Performance", "Output", "Options"]
    assert text.startswith("Usage: ptyfast reconstruct [OPTIONS] SCAN...")
    assert "Usage: ptyfast simulate [OPTIONS] [IMAGE]..." in helps["simulate"]
    assert "Usage: ptyfast refine [OPTIONS] SCAN\n" in helps["refine"]
    # the panels line up: one name column for every section of a command
    starts = {len(m.group(1)) for m in re.finditer(r"^(  \S.*?  +)\S", text, flags=re.M)
              if len(m.group(1)) <= Command.TERM_WIDTH + 4}
    assert len(starts) == 1, starts


def test_every_fixed_choice_is_shown_from_its_enum(helps):
    for (name, option), enum in OPTION_ENUMS.items():
        cmd = COMMANDS[name]
        param = next(p for p in visible_options(cmd) if option in names(cmd, p))
        assert matches(choice_tokens(param.metavar), enum), (name, option, param.metavar)
        assert param.metavar in helps[name], (name, option)


def test_every_choice_shown_comes_from_choices_py():
    for name, cmd in COMMANDS.items():
        for param in visible_options(cmd):
            tokens = choice_tokens(param.metavar)
            if tokens:
                assert any(matches(tokens, e) for e in ENUMS), (name, param.opts, param.metavar)
                assert (name, long_name(cmd, param)) in OPTION_ENUMS, (name, param.opts)


def meaning(cmd, param) -> tuple:
    """What a user sees of an option: its value form and choices, whether it is a flag, and its panel."""
    return (param.metavar, bool(getattr(param, "is_flag", False)), bool(getattr(param, "multiple", False)),
            param.rich_help_panel)


def test_one_name_means_one_thing_in_every_command():
    seen: dict[str, dict[tuple, list[str]]] = {}
    for name, cmd in COMMANDS.items():
        for param in visible_options(cmd):
            for option in names(cmd, param):
                if option.startswith("--"):
                    seen.setdefault(option, {}).setdefault(meaning(cmd, param), []).append(name)
    shared = {o for o, m in seen.items() if sum(len(v) for v in m.values()) > 1}
    assert {"--output", "--model", "--frames", "--threads", "--probe", "--probe-update", "--iterations",
            "--fit", "--amp", "--seed", "--batch"} <= shared
    clashes = {o: m for o, m in seen.items() if len(m) > 1 and o not in SAME_NAME_EXCEPTIONS}
    assert not clashes, clashes
    for option in SAME_NAME_EXCEPTIONS:  # a documented exception must still be one
        assert len(seen[option]) > 1, option


#: old name → (command, argument list using it, parameter, value it must give)
OLD_NAMES = {
    ("train", "--model"): (["--model", "ptychonn"], "architecture", "ptychonn"),
    ("train", "--noise"): (["--noise", "0.5"], "noise_fraction", 0.5),
    ("train", "--photons"): (["--photons", "1:2"], "noisy_photons", "1:2"),
    ("finetune", "--learn-probe"): (["SCAN", "--learn-probe"], "probe_update", True),
    ("demo", "--refine"): (["--refine", "5"], "refine_iterations", 5),
    ("bench", "--backend"): (["--backend", "torch"], "backends", "torch"),
    ("bench", "--precision"): (["--precision", "int8"], "precisions", "int8"),
    ("bench", "--batch"): (["--batch", "4"], "batches", "4"),
    ("bench", "--frames"): (["--frames", "64"], "e2e_frames", 64),
}


def test_old_names_still_work_and_are_not_shown(helps):
    renamed = {(name, old) for name, cmd in COMMANDS.items() for old in cmd.renamed}
    assert renamed == set(OLD_NAMES)
    for (name, old), (args, param, value) in OLD_NAMES.items():
        cmd = COMMANDS[name]
        new = cmd.renamed[old]
        assert any(old in p.opts and new in p.opts for p in cmd.params), (name, old)
        ctx = cmd.make_context(name, list(args), resilient_parsing=True)
        assert ctx.params[param] == value, (name, old)
        assert not re.search(rf"(?<![\w-]){re.escape(old)}(?![\w-])", helps[name]), (name, old)
        assert re.search(rf"(?<![\w-]){re.escape(new)}(?![\w-])", helps[name]), (name, new)


def test_library_constants_are_the_defaults_shown(helps):
    from ptyfast.runtime.reconstruct import ReconstructJob

    text = " ".join(helps["reconstruct"].split())
    assert f"--chunk N Frames read from disk per chunk. [default: {ReconstructJob.chunk};" in text
    assert f"[default: {ReconstructJob.consistency_frames}; x>=0]" in text
    ctx = COMMANDS["reconstruct"].make_context("reconstruct", ["s.cxi"], resilient_parsing=True)
    assert ctx.params["chunk"] == ReconstructJob.chunk
    assert ctx.params["consistency_frames"] == ReconstructJob.consistency_frames


def cli_defaults(name: str) -> dict:
    return {p.name: p.default for p in COMMANDS[name].params}


def check_defaults(name: str, record, renamed: dict | None = None, skip: tuple = ()) -> None:
    import dataclasses

    fields = {f.name: f.default for f in dataclasses.fields(record) if f.default is not dataclasses.MISSING}
    got = cli_defaults(name)
    compared = 0
    for param, default in got.items():
        field = (renamed or {}).get(param, param)
        if field in fields and param not in skip:
            expected = fields[field]
            if isinstance(expected, tuple) and isinstance(default, str):  # a comma-separated list option
                default, expected = tuple(default.split(",")), tuple(str(v) for v in expected)
            assert default == expected, (name, param, default, expected)
            compared += 1
    assert compared >= 3, (name, compared)


def test_cli_defaults_agree_with_the_option_records():
    from ptyfast.bench import BenchOptions
    from ptyfast.evaluation.demo import DemoOptions
    from ptyfast.finetune import FinetuneOptions
    from ptyfast.runtime.reconstruct import ReconstructJob

    check_defaults("reconstruct", ReconstructJob, skip=("chunk", "consistency_frames"))  # read at parse time
    check_defaults("finetune", FinetuneOptions, renamed={"probe_update": "learn_probe"},
                   skip=("threads",))  # omitted = the record's 0
    check_defaults("bench", BenchOptions, renamed={"e2e_frames": "frames"})
    check_defaults("demo", DemoOptions, renamed={"refine_iterations": "refine"})


def test_train_defaults_agree_with_its_options():
    pytest.importorskip("torch")
    from ptyfast.training.data import DataOptions
    from ptyfast.training.train import TrainOptions

    check_defaults("train", TrainOptions, renamed={"architecture": "model"}, skip=("threads", "init_from"))
    check_defaults("train", DataOptions, renamed={"procedural": "procedural_fraction",
                                                  "noise_fraction": "noise_fraction"})


def test_refine_defaults_agree_with_the_library_except_the_probe_start():
    from ptyfast.cli.cmd_refine import PROBE_START
    from ptyfast.refine import refine

    library = {k: v.default for k, v in inspect.signature(refine).parameters.items()}
    cli = cli_defaults("refine")
    for param, lib in (("init", "init"), ("algorithm", "algorithm"), ("iterations", "iterations"),
                       ("alpha", "alpha"), ("beta", "beta"), ("batch", "batch"), ("probe_update", "update_probe"),
                       ("probe_modes", "probe_modes"), ("seed", "seed")):
        assert cli[param] == library[lib], param
    # documented difference: the command starts from a flat object, the library's callers from a network's
    assert cli["probe_start"] == PROBE_START == 2 and library["probe_start"] == 0


def test_enums_agree_with_the_library_lists():
    from ptyfast.export.report import FORMATS
    from ptyfast.bench import BENCH_BACKENDS
    from ptyfast.io.cxi import COMPRESSIONS
    from ptyfast.physics.simulate import DETECTOR_DTYPES

    assert Compression.values() == tuple(COMPRESSIONS)
    assert DetectorDtype.values() == tuple(DETECTOR_DTYPES)
    assert ExportFormat.values() == tuple(FORMATS)
    assert set(Backend.values()) - {"auto"} == set(BENCH_BACKENDS)


def test_plain_help_strips_sphinx_markup():
    assert plain_help("Adapt (:func:`ptyfast.models.preprocess.fit_frames`) with ``crop``; 10 %% held out.") \
        == "Adapt (ptyfast.models.preprocess.fit_frames) with crop; 10 % held out."
    assert plain_help(":meth:`~ptyfast.Scan.frames` and :py:class:`Scan`") == "ptyfast.Scan.frames and Scan"
