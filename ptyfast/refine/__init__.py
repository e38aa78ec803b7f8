"""Iterative refinement (ePIE / rPIE) of an object and probe, e.g. from a network's initial guess.

``refine(scan, init=...)`` is the library entry point; :func:`refine_reconstruction` refines an in-memory
reconstruction (what ``ptyfast reconstruct --refine rpie`` calls); :func:`iterations_to_reach` measures the
paper's Figure-9 claim.
"""

from ptyfast.refine.run import ALGORITHMS, RefineResult, iterations_to_reach, refine
from ptyfast.refine.start import check_positions, initial_object

__all__ = ["ALGORITHMS", "RefineResult", "check_positions", "initial_object", "iterations_to_reach", "refine"]


def refine_reconstruction(scan, obj, *, positions=None, probe=None, algorithm: str = "rpie",
                          iterations: int = 50, **kwargs) -> RefineResult:
    """Refine an in-memory reconstruction (what ``ptyfast reconstruct --refine rpie --iterations N`` calls).

    Parameters
    ----------
    scan : Scan
        The measured scan.
    obj : complex array (rows, cols)
        The network's stitched object, used as the initial guess.
    positions : ndarray (N, 2), optional
        (y, x) window corners on ``obj``'s grid when they differ from ``scan.positions``.
    probe : complex array (H, W), optional
        Probe to start from; default ``scan.probe``.
    algorithm, iterations, **kwargs
        As :func:`refine` (alpha, beta, batch, update_probe, progress, ...).

    Returns
    -------
    RefineResult
    """
    return refine(scan, init=obj, positions=positions, probe=probe, algorithm=algorithm,
                  iterations=iterations, **kwargs)


__all__ += ["refine_reconstruction"]
