"""Physics fine-tuning of pre-trained networks on a scan (the seed paper's method) and joint probe learning.

Needs torch (the ``train`` extra). :mod:`ptyfast.finetune.torch_forward` is the project's forward model in
torch; :mod:`ptyfast.finetune.finetune` the optimisation, output and the ``ptyfast finetune`` command's
library function.
"""

from ptyfast.finetune.finetune import (
    FinetuneOptions, FinetuneResult, finetune, finetune_file, predict_object, probe_error, resolve_probe,
    save_finetuned, select_frames,
)

__all__ = [
    "FinetuneOptions", "FinetuneResult", "finetune", "finetune_file", "predict_object", "probe_error",
    "resolve_probe", "save_finetuned", "select_frames",
]
