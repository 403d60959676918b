"""Post-training static int8 quantisation of ONNX graphs with ONNX Runtime's own tool (no torch).

QDQ format: weights int8 per output channel, activations uint8 with ranges observed on
calibration inputs. Two users: the int8 backbone a flow can be trained on
(`flowclas_ros.training.int8_features`) and `flowclas-ros quantize` (`flowclas_ros.deploy.quantize`),
which must quantise the backbone identically, so both call `quantize_graph` here.
"""
from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np

FLOW_NODE_PREFIX = "/head/flow/"  # export names nodes after the module path (deploy/export.py)
BACKBONE_NODE_PREFIX = "/backbone/"
FLOW_OPS = ("Conv", "Relu")  # a ReLU selected with its convolution folds into its uint8 range
BACKBONE_OPS = ("Conv", "Clip")  # EfficientNet-Lite's ReLU6 is a Clip


class QuantizeError(RuntimeError):
    """The model cannot be quantised as asked (no flow convolutions, no calibration frames)."""


def quantize_graph(src: Path, inputs: Sequence[np.ndarray],
                   select: Callable[[Any], bool]) -> tuple[Any, int]:
    """Static QDQ int8 of the nodes `select(node)` picks in the ONNX file `src`; the ranges come
    from `inputs` (NCHW batches of the graph's one input). Returns (model proto, convolutions
    quantised)."""
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    name = onnx.load(str(src), load_external_data=False).graph.input[0].name

    class _Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter([{name: x} for x in inputs])

        def get_next(self) -> Optional[dict[str, np.ndarray]]:
            return next(self._it, None)

    # onnxruntime.quantization logs its per-tensor adjustments on the root logger: a screenful
    # per model, nothing a user acts on
    root = logging.getLogger()
    level = root.level
    root.setLevel(max(level, logging.ERROR))
    try:
        with tempfile.TemporaryDirectory(prefix="flowclas_quant_") as tmp:
            pre, q = Path(tmp) / "pre.onnx", Path(tmp) / "q.onnx"
            quant_pre_process(str(src), str(pre), skip_optimization=False, skip_symbolic_shape=True)
            # selected after ONNX Runtime's pre-processing pass (it could rename nodes): a
            # selection that came back empty would be a silent no-op reported as an int8 model
            picked = [n for n in onnx.load(str(pre)).graph.node if select(n)]
            if not any(n.op_type == "Conv" for n in picked):
                raise QuantizeError(f"{src}: no convolutions to quantise after ONNX Runtime's "
                                    "pre-processing pass")
            quantize_static(str(pre), str(q), _Reader(), quant_format=QuantFormat.QDQ,
                            per_channel=True, activation_type=QuantType.QUInt8,
                            weight_type=QuantType.QInt8, nodes_to_quantize=[n.name for n in picked])
            return onnx.load(str(q)), sum(n.op_type == "Conv" for n in picked)
    finally:
        root.setLevel(level)
