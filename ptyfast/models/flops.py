"""Multiply-accumulates per pattern of a network: from the torch module (forward hooks) or from an ONNX graph
(weight shapes and shape inference; no torch needed). FLOPs = 2 × MACs of Conv / ConvTranspose / Linear."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ptyfast.errors import InputError


def count_macs_torch(model, input_shape: tuple[int, ...]) -> int:
    """Multiply-accumulates of one forward pass of ``model`` on a zero tensor of ``input_shape`` (batch 1).

    Counts Conv2d (output elements × C_in/groups × k_h × k_w), ConvTranspose2d (input elements × C_out/groups ×
    k_h × k_w) and Linear (output elements × in_features) with forward hooks; activations, normalisation and
    resampling are not counted (they are memory-bound, a few % of the total).
    """
    import torch

    total = [0]

    def hook(mod, inputs, out):
        if isinstance(mod, torch.nn.ConvTranspose2d):
            x = inputs[0]
            total[0] += (x.numel() // x.shape[0]) * (mod.out_channels // mod.groups) * int(np.prod(mod.kernel_size))
        elif isinstance(mod, torch.nn.Conv2d):
            total[0] += (out.numel() // out.shape[0]) * (mod.in_channels // mod.groups) * int(np.prod(mod.kernel_size))
        elif isinstance(mod, torch.nn.Linear):
            total[0] += (out.numel() // out.shape[0]) * mod.in_features

    handles = [m.register_forward_hook(hook) for m in model.modules()
               if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d, torch.nn.Linear))]
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(input_shape))
    finally:
        for h in handles:
            h.remove()
        model.train(was)
    return total[0]


def count_macs_onnx(path: str | Path) -> int:
    """Multiply-accumulates per pattern of the Conv / ConvTranspose / Gemm / MatMul nodes of an fp32 ONNX graph,
    from shape inference (the batch axis excluded). Needs the ``onnx`` package."""
    import onnx
    from onnx import numpy_helper, shape_inference

    model = shape_inference.infer_shapes(onnx.load(str(path)))
    g = model.graph
    weights = {t.name: tuple(numpy_helper.to_array(t).shape) for t in g.initializer}
    shapes: dict[str, tuple] = {}
    for vi in list(g.value_info) + list(g.input) + list(g.output):
        dims = [d.dim_value if d.HasField("dim_value") else None for d in vi.type.tensor_type.shape.dim]
        shapes[vi.name] = tuple(dims)

    def per_pattern(name: str) -> int:
        dims = shapes.get(name)
        if not dims or any(d is None for d in dims[1:]):
            raise InputError(f"the ONNX graph {path} lacks a static shape for tensor '{name}'.")
        return int(np.prod(dims[1:]))

    macs = 0
    for node in g.node:
        if node.op_type in ("Conv", "ConvTranspose") and node.input[1] in weights:
            w = weights[node.input[1]]
            spatial = int(np.prod(w[2:]))
            if node.op_type == "Conv":  # w: (C_out, C_in/g, kh, kw)
                macs += per_pattern(node.output[0]) * w[1] * spatial
            else:  # w: (C_in, C_out/g, kh, kw)
                macs += per_pattern(node.input[0]) * w[1] * spatial
        elif node.op_type in ("Gemm", "MatMul") and len(node.input) > 1 and node.input[1] in weights:
            macs += per_pattern(node.output[0]) * weights[node.input[1]][0]
    return macs


