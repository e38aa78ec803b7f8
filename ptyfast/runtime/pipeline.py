"""The reconstruct pipeline's names at their former path, for code that still imports them from here.

The pipeline lives in one module per job: :mod:`ptyfast.runtime.stream` (the reader thread and the background
stage), :mod:`ptyfast.runtime.stitch` (plan, inference into partials, blend),
:mod:`ptyfast.runtime.consistency` (the data-consistency figure) and :mod:`ptyfast.runtime.reconstruct` (the
reconstruct job and its result). New code imports from those.
"""

from ptyfast.models.probe_choice import probe_similarity
from ptyfast.runtime.consistency import (CONSISTENCY_FRAMES, Consistency, consistency_from_sums, consistency_sample,
                                         consistency_sums, data_consistency, frame_sums, measured_amplitudes)
from ptyfast.runtime.reconstruct import Reconstruction, check_far_field, finish_reconstruction, reconstruct_scan
from ptyfast.runtime.stitch import (PartialStitch, StitchPlan, combine_partials, complex_patches, finish_stitch,
                                    plan_stitch, stitch_frames)
from ptyfast.runtime.stream import CHUNK, BackgroundStage, stream_frames

_StitchStage = BackgroundStage

__all__ = ["CHUNK", "CONSISTENCY_FRAMES", "Consistency", "PartialStitch", "Reconstruction", "StitchPlan",
           "check_far_field", "combine_partials", "complex_patches", "consistency_from_sums", "consistency_sample",
           "consistency_sums", "data_consistency", "finish_reconstruction", "finish_stitch", "frame_sums",
           "measured_amplitudes", "plan_stitch", "probe_similarity", "reconstruct_scan", "stitch_frames",
           "stream_frames"]
