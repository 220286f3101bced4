"""Turn a PyTorch classifier into an aiscan ONNX model: dynamic batch, metadata inside."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from aiscan.model.meta import ModelInfo, write_info

if TYPE_CHECKING:
    import torch

OPSET = 17


def export_onnx(
    model: torch.nn.Module, info: ModelInfo, out: str | Path, *, opset: int = OPSET
) -> Path:
    """Export ``model`` (NCHW float input; output as ``info.output`` says: logits or
    probabilities) with ``info`` as its metadata.

    The batch axis is dynamic; height and width are fixed by ``info.preprocessing``.
    """
    import torch

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    h, w = info.preprocessing.input_size
    model = model.eval()
    tmp = out.with_name(out.name + ".tmp")
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(
            model,
            (torch.zeros(1, 3, h, w),),
            str(tmp),
            input_names=["input"],
            output_names=[info.output],
            dynamic_axes={"input": {0: "batch"}, info.output: {0: "batch"}},
            opset_version=opset,
            dynamo=False,
        )
    write_info(tmp, info)
    tmp.replace(out)
    return out
