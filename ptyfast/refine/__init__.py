"""Iterative refinement (ePIE / rPIE) of an object and probe, e.g. from a network's initial guess.

``refine(scan, init=...)`` is the library entry point; :func:`refine_reconstruction` refines an in-memory
reconstruction (what ``ptyfast reconstruct --refine rpie`` calls); :func:`iterations_to_reach` measures the
paper's Figure-9 claim.
"""

from ptyfast.refine.engines import (
    ALGORITHMS,
    RefineResult,
    check_positions,
    initial_object,
    iterations_to_reach,
    refine,
)

__all__ = ["ALGORITHMS", "RefineResult", "check_positions", "initial_object", "iterations_to_reach", "refine"]
