"""Physics fine-tuning of pre-trained networks on a scan (the seed paper's method) and joint probe learning.

Needs torch (the ``train`` extra). Modules by job: :mod:`~ptyfast.finetune.options` (options, frame subset,
result record), :mod:`~ptyfast.finetune.probe` (the starting probe), :mod:`~ptyfast.finetune.objectives` (data
term, anchors, the overlap-stitched object), :mod:`~ptyfast.finetune.loop` (the optimisation; the method is
described there), :mod:`~ptyfast.finetune.network` (trainable weights, how the network is called, its stitched
prediction), :mod:`~ptyfast.finetune.passes` (the passes over the training frames: initial, per epoch, final),
:mod:`~ptyfast.finetune.report` (the weights kept, the verdict, the summary and the new manifest),
:mod:`~ptyfast.finetune.validation` (the guard: held-out frames judged on ``reconstruct``'s object),
:mod:`~ptyfast.finetune.output` (model, previews and the ``ptyfast finetune`` command's library function);
:mod:`~ptyfast.finetune.torch_forward` and :mod:`~ptyfast.finetune.torch_stitch` are the forward model and the
stitching in torch.
"""

from ptyfast.finetune.loop import finetune, predict_object
from ptyfast.finetune.options import FinetuneOptions, FinetuneResult, select_frames
from ptyfast.finetune.output import finetune_file, save_finetuned
from ptyfast.finetune.probe import probe_error, resolve_probe

__all__ = [
    "FinetuneOptions", "FinetuneResult", "finetune", "finetune_file", "predict_object", "probe_error",
    "resolve_probe", "save_finetuned", "select_frames",
]
