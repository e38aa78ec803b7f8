"""The refinement loop: :func:`refine` (ePIE / rPIE over all positions, probe trial, divergence guard) and
:func:`iterations_to_reach` (the paper's Figure-9 measure). The update formulas are in
:mod:`ptyfast.refine.engines`."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from ptyfast.choices import Algorithm, Batching
from ptyfast.errors import InputError
from ptyfast.physics.scanpath import RASTER_REGULARITY, raster_lattice
from ptyfast.physics.xp import get_array_module
from ptyfast.refine.batches import make_batches
from ptyfast.refine.engines import make_engine
from ptyfast.refine.probe import PROBE_TRIAL, _probe_trial, mixed_state
from ptyfast.refine.start import RefineStart, _probe_power_ratio, prepare_refinement

ALGORITHMS = Algorithm.values()
#: Default (alpha, beta) per algorithm. ePIE: step sizes (Maiden & Rodenburg 2009 use 1). rPIE: the
#: regularisation weights of Maiden et al. 2017, Table 1 (0.05–0.25 recommended; Pty-Chi's default 0.1).
DEFAULT_PARAMETERS = {"epie": (1.0, 1.0), "rpie": (0.1, 0.1)}
DIVERGENCE_FACTOR = 10.0  # an error this many times its best so far ends the run as diverged (best iterate kept)
#: With probe updates, an error this many times its best so far stops them: the best iterate is restored and the
#: run goes on with its probe held. On the real Siemens star sequential rPIE with the default probe updates creeps
#: up from iteration ≈ 40 (0.0176 → 0.019 by 80) and runs away near 110 (benchmarks: "Refinement's probe update").
PROBE_RELAPSE = 1.1

ProgressFn = Callable[[int, int, float], Any]


@dataclass
class RefineResult:
    """What :func:`refine` returns.

    Attributes
    ----------
    object : complex64 array (rows, cols)
        Refined object on the grid of ``positions`` (numpy or CuPy, like the computation).
    probe : complex64 array (H, W)
        Refined (or, with probe updates off, the possibly rescaled input) probe.
    positions : ndarray (N, 2) float64
        (y, x) top-left window corners in object pixels, as used.
    errors : ndarray (iterations_run,) float64
        Normalised amplitude error E of each completed iteration (see the module docstring).
    timings : ndarray (iterations_run,) float64
        Wall-clock seconds of each completed iteration.
    cpu_timings : ndarray (iterations_run,) float64
        CPU seconds of this thread in each completed iteration (``time.thread_time``; with one thread, what a
        shared machine disturbs least).
    algorithm : str
        ``"epie"`` or ``"rpie"``.
    options : dict
        The settings used (alpha, beta, batch, probe updates, seed, …), for provenance.
    diverged : bool
        True when an iteration produced NaN/Inf; ``object``/``probe`` are then the last good iterate.
    message : str
        Why the run stopped early (divergence, target reached) or "".
    meta : dict
        Extra facts (e.g. the probe rescaling factor applied).
    warnings : list of str
        What the user should know about the result (e.g. a regular raster with probe updates).
    """

    object: Any
    probe: Any
    positions: np.ndarray
    errors: np.ndarray
    timings: np.ndarray
    algorithm: str
    options: dict = field(default_factory=dict)
    cpu_timings: np.ndarray = field(default_factory=lambda: np.zeros(0))
    diverged: bool = False
    message: str = ""
    meta: dict = field(default_factory=dict)
    warnings: list = field(default_factory=list)

    @property
    def iterations(self) -> int:
        """Number of completed (kept) iterations."""
        return int(len(self.errors))

    @property
    def seconds_per_iteration(self) -> float:
        """Median wall-clock seconds per iteration (NaN when none ran)."""
        return float(np.median(self.timings)) if len(self.timings) else float("nan")


@dataclass
class RefineSettings:
    """How :func:`refine` iterates; :meth:`resolve` checks every value (one sentence each) and fills the
    defaults: α/β from :data:`DEFAULT_PARAMETERS`, batch 1 (sequential), probe step 0.25 sequential / 1 batched."""

    algorithm: str = "rpie"
    iterations: int = 50
    alpha: float | None = None
    beta: float | None = None
    batch: int | None = None
    probe_step: float | None = None
    probe_start: int = 0
    batching: str = "random"

    def resolve(self, n_frames: int) -> "RefineSettings":
        algorithm = Algorithm.check(self.algorithm, "algorithm")
        if int(self.iterations) < 1:
            raise InputError(f"iterations must be ≥ 1; found {self.iterations}.")
        a_def, b_def = DEFAULT_PARAMETERS[algorithm]
        alpha = a_def if self.alpha is None else float(self.alpha)
        beta = b_def if self.beta is None else float(self.beta)
        for name, v in (("alpha", alpha), ("beta", beta)):
            if algorithm == "rpie" and not 0.0 <= v <= 1.0:
                raise InputError(f"rPIE {name} is a regularisation weight in [0, 1]; found {v}.")
            if algorithm == "epie" and not (v > 0 and math.isfinite(v)):
                raise InputError(f"ePIE {name} is a step size > 0; found {v}.")
        batching = Batching.check(self.batching, "batching")
        disjoint = batching == Batching.DISJOINT
        batch = (None if disjoint else 1) if self.batch is None else int(self.batch)
        if batch is not None and batch < 1:
            raise InputError(f"batch must be ≥ 1 positions; found {batch}.")
        batch = None if batch is None else min(batch, n_frames)
        batched = disjoint or batch > 1
        probe_step = (1.0 if batched else 0.25) if self.probe_step is None else float(self.probe_step)
        if not 0.0 < probe_step <= 1.0:
            raise InputError(f"probe_step must be in (0, 1]; found {probe_step}.")
        if self.probe_start < 0:
            raise InputError(f"probe_start must be ≥ 0; found {self.probe_start}.")
        return RefineSettings(algorithm, int(self.iterations), alpha, beta, batch, probe_step, int(self.probe_start),
                              batching)



def refine(scan, *, init="flat", algorithm: str = "rpie", iterations: int = 50, alpha: float | None = None,
           beta: float | None = None, batch: int | None = None, update_probe: bool = True, probe_start: int = 0,
           probe_step: float | None = None, probe=None, probe_modes: int | None = None, positions=None,
           rescale_probe: str | bool = "auto", probe_trial: int = PROBE_TRIAL, seed: int | None = 0,
           target_error: float | None = None, xp=None, progress: ProgressFn | None = None, watch=None,
           batching: str = "random") -> RefineResult:
    """Refine an object (and probe) with ePIE or rPIE.

    Parameters
    ----------
    scan : ptyfast.scan.Scan
        Diffraction (N, H, W) photons (zero frequency at the centre), positions (N, 2) (y, x) top-left window
        corners in object pixels (sub-pixel allowed, all ≥ 0), probe (H, W), optional mask (H, W).
    init : {"flat", "random"} or complex array (rows, cols)
        Initial object (see :func:`initial_object`); an array sets the object grid, e.g. a network
        reconstruction on the scan's pixel grid.
    algorithm : {"rpie", "epie"}
    iterations : int
        Passes over all positions (≥ 1).
    alpha, beta : float, optional
        Object and probe parameters: rPIE regularisation weights in [0, 1] (default 0.1 each), ePIE step sizes
        > 0 (default 1 each). See the module docstring for the update formulas.
    batch : int, optional
        None or 1: sequential (textbook; random order each iteration). > 1: mini-batches of this many
        positions, their updates accumulated with overlap_add and normalised (module docstring). With
        ``batching="disjoint"``: the largest batch (None: no limit on a GPU, 16 on the CPU).
    batching : {"random", "disjoint"}
        How positions are grouped into batches (:mod:`ptyfast.refine.batches`): random slices, or groups of
        windows that do not overlap on the probe's support (the sequential algorithm's progress per pass,
        batched).
    update_probe : bool
        Update the probe as well as the object.
    probe_start : int
        First iteration (0-based) with probe updates, when ``update_probe`` is on.
    probe_step : float, optional
        γ_P, a multiplier of the probe step in (0, 1]; default 0.25 sequential, 1 batched (module docstring).
    probe : complex array (H, W) or (modes, H, W), optional
        Starting probe; default ``scan.probe``. Several modes: a mixed-state (partially coherent) probe,
        refined mode by mode (:meth:`ptyfast.refine.engines.Engine.step_modes`).
    probe_modes : int, optional
        Refine this many incoherent probe modes: the strongest of the given ones, and new ones made by
        :func:`mixed_state` when more are asked for than given.
    positions : ndarray (N, 2), optional
        Positions to use instead of ``scan.positions`` (e.g. those of a stitched reconstruction's grid).
    rescale_probe : {"auto", True, False}
        Tie the modelled photons per frame to the data's (:func:`_scale_start`; the factor is in ``result.meta``).
        ``"auto"``: a probe more than 10× off is scaled; otherwise a flat/random start absorbs the scale (a
        refined probe is then held at the data's mean photons per frame), and a given object keeps its amplitude.
    probe_trial : int
        With probe updates: from ``probe_start`` on, run this many iterations twice from the same state, probe
        updated and held, and go on with the lower data error (``result.meta["probe_trial"]``); 0 turns it off.
    seed : int or None
        Seeds the random initial object and the position order.
    target_error : float, optional
        Stop as soon as an iteration's error is ≤ this value.
    xp : module, optional
        numpy or cupy; default: the module of ``init`` when it is an array, else numpy.
    progress : callable(iteration, iterations, error), optional
        Called after every completed iteration (1-based ``iteration``).
    watch : callable(iteration, object), optional
        Called after every completed iteration with the current object (a view: copy to keep it), e.g. to
        follow its error against a known truth.

    Returns
    -------
    RefineResult
        Object, probe, errors and timings per iteration. On divergence (NaN/Inf in the error, object or
        probe) the run stops, ``diverged`` is True, ``message`` says so and object/probe are the last good
        iterate.

    Raises
    ------
    InputError
        Bad options, a missing probe, non-finite data, or positions outside the object grid.
    """
    st = RefineSettings(algorithm, iterations, alpha, beta, batch, probe_step, probe_start,
                        batching).resolve(scan.n_frames)
    if xp is None:
        xp = get_array_module(init) if not isinstance(init, str) and init is not None else np
    if probe_modes is not None:
        probe = mixed_state(scan.probe if probe is None else probe, probe_modes)
    start = prepare_refinement(scan, init=init, probe=probe, positions=positions, seed=seed, xp=xp)
    arbitrary = isinstance(init, str) or init is None  # a flat/random start's unit transmission means nothing
    meta = _scale_start(start, rescale_probe, update_probe and not arbitrary, arbitrary, xp)
    engine = make_engine(st.algorithm, start.object, start.probe, start.positions, start.intensity, start.mask,
                         st.alpha, st.beta, xp)
    engine.probe_step = st.probe_step
    engine.disjoint = st.batching == Batching.DISJOINT
    # the power a refined probe is held at: with a flat/random start, the data's mean photons per frame (the
    # probe is only moved there once its update is kept, P·O unchanged); else the starting probe's
    power = start.photons / scan.n_frames if arbitrary else float(xp.sum(xp.abs(start.probe) ** 2))
    trial = probe_trial if update_probe and st.probe_start + probe_trial < st.iterations else 0
    warnings = _raster_warning(start.positions, meta) if update_probe else []
    batcher = make_batches(st.batching, start.positions, start.probe if xp is np else xp.asnumpy(start.probe),
                           st.batch, on_gpu=xp is not np)
    loop = _Loop(engine, st, batcher, start.photons, power, seed, progress, watch)
    loop.run(bool(update_probe), trial, target_error, meta)
    options = dict(
        algorithm=st.algorithm, iterations=st.iterations, alpha=st.alpha, beta=st.beta, batch=st.batch,
        batching=st.batching, disjoint_cap=getattr(batcher, "cap", None), update_probe=bool(update_probe),
        probe_start=st.probe_start, probe_step=st.probe_step, seed=seed,
        probe_trial=int(trial), init=init if isinstance(init, str) else "array", rescale_probe=str(rescale_probe),
    )
    return RefineResult(
        object=engine.obj, probe=engine.probe, positions=start.positions, algorithm=st.algorithm, options=options,
        errors=np.asarray(loop.errors, dtype=np.float64), timings=np.asarray(loop.timings, dtype=np.float64),
        cpu_timings=np.asarray(loop.cpu_timings, dtype=np.float64), diverged=loop.diverged, message=loop.message,
        meta=meta, warnings=warnings,
    )


def _raster_warning(positions: np.ndarray, meta: dict) -> list[str]:
    """A warning (and ``meta["raster_lattice"]``) when a probe is refined on a regular raster."""
    lattice = raster_lattice(positions)
    if lattice is None or lattice["jitter"] >= RASTER_REGULARITY:
        return []
    meta["raster_lattice"] = lattice
    sy, sx = lattice["step"]
    return [f"the positions lie on a regular raster (step {sy:.1f} × {sx:.1f} px, {100 * lattice['jitter']:.1f} % "
            "rms off the lattice): an updated probe can take up the grid's periodicity (the raster-grid "
            "pathology); the probe trial keeps the update only where it lowers the data error. To measure a "
            f"probe, scan a Fermat spiral or jitter the raster by ≥ {100 * RASTER_REGULARITY:.0f} % of the step."]


def _scale_start(start: RefineStart, rescale_probe, scale_probe_to_object: bool, arbitrary: bool, xp) -> dict:
    """Tie the start's photons to the data's (``refine``'s ``rescale_probe``), in place; returns the facts
    for ``result.meta``: the power ratio and which of probe or object was scaled, by how much.

    The probe is scaled so that the modelled photons per frame with the initial object match the data's mean
    when asked (``True``), when the two differ by more than 10× (a normalisation-convention mismatch, e.g. an
    unnormalised-FFT probe), or when a given starting object (a network's, in absolute units) keeps its amplitude
    while the probe is refined; otherwise a flat or random start is scaled instead (its unit transmission is not
    the sample's, while a given probe's power may be a measurement). A probe refined from a flat or random start
    is then held at the data's mean photons per frame (as for a weak object, |O| ≈ 1), moved there with the
    object inversely (P·O unchanged) once its update is kept; a held probe keeps its power."""
    ratio = _probe_power_ratio(start.probe, start.object, start.positions, start.intensity, xp)
    meta: dict = {"object_shape": tuple(start.object.shape), "probe_power_ratio": ratio}
    if not math.isfinite(ratio) or ratio <= 0:
        raise InputError("the probe and initial object model no photons; check the probe and the init.")
    if rescale_probe is True or (rescale_probe == "auto" and (not 0.1 <= ratio <= 10.0 or scale_probe_to_object)):
        start.probe *= np.float32(math.sqrt(ratio))
        meta["probe_rescaled_by"] = math.sqrt(ratio)
    elif arbitrary and rescale_probe == "auto":
        start.object *= np.float32(math.sqrt(ratio))  # the object, not the probe's measured power, absorbs it
        meta["object_scaled_by"] = math.sqrt(ratio)
    return meta


class _Loop:
    """The iterations of one :func:`refine` run: errors and timings per iteration, the best iterate so far, and
    why the run stopped."""

    def __init__(self, engine, st: RefineSettings, batcher, photons: float, power: float, seed, progress, watch):
        self.engine, self.st, self.batcher, self.photons, self.power = engine, st, batcher, photons, power
        self.rng = np.random.default_rng(seed)
        self.progress, self.watch = progress, watch
        self.errors: list[float] = []
        self.timings: list[float] = []
        self.cpu_timings: list[float] = []
        self.diverged, self.message = False, ""
        self.best: tuple = (math.inf, -1, None, None)  # lowest error so far: (error, iteration, object, probe)

    def run(self, update_probe: bool, trial: int, target_error: float | None, meta: dict) -> None:
        it, st = 0, self.st
        while it < st.iterations:
            if trial and it == st.probe_start:
                update_probe = self._trial(it, trial, meta)
                it += trial
                continue
            e = self._iteration(it, update_probe and it >= st.probe_start)
            if e is None:
                break
            if update_probe and it >= st.probe_start and e > PROBE_RELAPSE * self.best[0]:
                update_probe = False
                self._hold_probe(it, e, meta)
            if target_error is not None and e <= target_error:
                self.message = f"reached the target error {target_error:.4g} at iteration {it + 1}."
                break
            it += 1

    def _hold_probe(self, it: int, e: float, meta: dict) -> None:
        """Stop probe updates whose error has risen past :data:`PROBE_RELAPSE` × the best: restore the best
        iterate (object and probe) and say so; the remaining iterations refine the object with that probe."""
        best_e, best_it, obj, probe = self.best
        self.engine.obj[...], self.engine.probe[...] = obj, probe
        meta["probe_updates_stopped"] = {"iteration": it, "error": e, "best_iteration": best_it, "best_error": best_e}
        self.message = (f"probe updates stopped at iteration {it + 1}: the data error had risen to {e:.4g}, "
                        f"{e / best_e:.2f}× its best ({best_e:.4g}, iteration {best_it + 1}); the run went on from "
                        "that iterate with its probe held.")

    def _record(self, it: int, e: float, dt: float, cpu: float) -> None:
        self.errors.append(e)
        self.timings.append(dt)
        self.cpu_timings.append(cpu)
        if self.progress is not None:
            self.progress(it + 1, self.st.iterations, e)

    def _trial(self, it: int, trial: int, meta: dict) -> bool:
        """The same iterations twice from here, probe updated and probe held: keep the better of the two."""
        engine = self.engine
        kept, errs, secs, e_updated, e_held = _probe_trial(engine, self.rng, self.batcher, trial,
                                                           self.photons, self.power)
        meta["probe_trial"] = {"from_iteration": it, "iterations": trial, "kept": kept,
                               "error_updated": e_updated, "error_held": e_held}
        self.message = (f"probe {kept}: over a {trial}-iteration trial from iteration {it + 1} updating it ended "
                        f"at data error {e_updated:.4g}, holding it at {e_held:.4g}.")
        for k, (e, dt) in enumerate(zip(errs, secs)):
            self._record(it + k, e, dt, dt)
        if errs[-1] < self.best[0]:
            self.best = (errs[-1], it + trial - 1, engine.obj.copy(), engine.probe.copy())
        return kept == "updated"

    def _iteration(self, it: int, do_probe: bool) -> float | None:
        """One pass over all positions; its error, or None when the run diverged (best iterate restored)."""
        engine, xp, best, algorithm = self.engine, self.engine.xp, self.best, self.st.algorithm
        t0, c0 = time.perf_counter(), time.thread_time()
        good = (best[2], best[3]) if best[2] is not None else (engine.obj.copy(), engine.probe.copy())
        err = 0.0
        for idx in self.batcher.batches(self.rng):
            err = err + engine.step(idx, do_probe)
        if do_probe:
            engine.fix_probe_power(self.power)
        e = float(err) / self.photons
        if not (math.isfinite(e) and bool(xp.isfinite(engine.obj.sum())) and bool(xp.isfinite(engine.probe.sum()))):
            engine.obj[...], engine.probe[...] = good
            self.diverged = True
            self.message = (f"{algorithm} diverged at iteration {it + 1} (NaN/Inf in the error, object or probe); "
                            f"kept the iterate of iteration {it} — lower alpha/beta or the batch size.")
            return None
        self._record(it, e, time.perf_counter() - t0, time.thread_time() - c0)
        if self.watch is not None:
            self.watch(it + 1, engine.obj)
        if e < best[0]:
            self.best = (e, it, engine.obj.copy(), engine.probe.copy())
        elif e > DIVERGENCE_FACTOR * best[0]:  # finite but runaway (seen with probe updates on real data)
            engine.obj[...], engine.probe[...] = best[2], best[3]
            self.diverged = True
            self.message = (f"{algorithm} diverged: the error grew from {best[0]:.4g} (iteration {best[1] + 1}) to "
                            f"{e:.4g} (iteration {it + 1}); kept the iterate of iteration {best[1] + 1} — lower "
                            "alpha/beta, start probe updates later or use fewer iterations.")
            return None
        return e


def iterations_to_reach(
    scan,
    init,
    *,
    reference_init="random",
    reference_iterations: int = 50,
    max_iterations: int | None = None,
    algorithm: str = "rpie",
    **kwargs,
) -> dict:
    """The paper's Figure-9 measure: iterations the ``init``-started run needs to reach the error that the
    ``reference_init``-started run reaches after ``reference_iterations``.

    Parameters
    ----------
    scan : Scan
    init : complex array (rows, cols) or str
        The initial guess under test (the network's reconstruction).
    reference_init : str or array
        The baseline start (the paper: random).
    reference_iterations : int
        Iterations of the baseline (the paper: 50).
    max_iterations : int, optional
        Give up after this many iterations of the tested run (default ``reference_iterations``).
    algorithm : str
    **kwargs
        Passed to both :func:`refine` (alpha, beta, batch, update_probe, seed, …).

    Returns
    -------
    dict
        ``target_error`` (baseline error after ``reference_iterations``), ``iterations`` (int, or None when
        not reached within ``max_iterations``), ``speedup`` (reference_iterations / iterations),
        ``errors`` and ``reference_errors`` (the two curves), ``initial_error`` of each run.
    """
    max_iterations = int(max_iterations or reference_iterations)
    ref = refine(scan, init=reference_init, algorithm=algorithm, iterations=reference_iterations, **kwargs)
    if ref.diverged or ref.iterations < reference_iterations:
        raise InputError(f"the reference run stopped early: {ref.message}")
    target = float(ref.errors[-1])
    run = refine(scan, init=init, algorithm=algorithm, iterations=max_iterations, target_error=target, **kwargs)
    hit = np.flatnonzero(run.errors <= target)
    its = int(hit[0]) + 1 if len(hit) else None
    return {
        "target_error": target,
        "iterations": its,
        "speedup": (reference_iterations / its) if its else None,
        "errors": run.errors,
        "reference_errors": ref.errors,
        "initial_error": float(run.errors[0]),
        "reference_initial_error": float(ref.errors[0]),
    }
