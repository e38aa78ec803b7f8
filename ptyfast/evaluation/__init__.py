"""Evaluation harnesses: reproduce the seed paper's experiments on its own protocol.

:func:`ptyfast.evaluation.paper.run_paper_protocol` (``ptyfast paper --images DIR``) trains the
comparison models within a stated CPU budget, reconstructs held-out cat-face scans and writes a markdown report
with the paper's Table 1 analogue, Tables 2 and 3 and Figure 9, every figure beside the paper's number and the
flat / blurred baselines.
"""

from __future__ import annotations

from ptyfast.evaluation.paper import PaperConfig, run_paper_protocol, split_images

__all__ = ["PaperConfig", "run_paper_protocol", "split_images"]
