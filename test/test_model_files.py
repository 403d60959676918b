"""Model files that would make the runtime lie or exhaust memory are refused at load, with one
clear line: oversized inputs, non-finite metadata, a graph that does not map an image to a score
map, a directory."""
from __future__ import annotations

import onnx
import pytest
from onnx import TensorProto, helper

from flowclas_ros.runtime.detector import Detector
from flowclas_ros.runtime.model_info import ModelFileError, read_model_info


def _with_metadata(src, dst, **changes):
    m = onnx.load(str(src))
    for p in m.metadata_props:
        if p.key in changes:
            p.value = str(changes[p.key])
    onnx.save(m, str(dst))
    return dst


def test_non_finite_or_zero_metadata_is_refused(trained, tmp_path):
    for key, value in (("threshold", "nan"), ("score_scale", "inf"), ("score_scale", "0")):
        bad = _with_metadata(trained["onnx"], tmp_path / f"{key}.onnx", **{key: value})
        with pytest.raises(ModelFileError, match=key if value != "0" else "score_scale"):
            Detector(bad)


def test_oversized_input_is_refused_before_loading(trained, tmp_path):
    bad = _with_metadata(trained["onnx"], tmp_path / "huge.onnx", input_size="[100000, 100000]")
    with pytest.raises(ModelFileError, match=r"100000x100000 is outside 16\.\.4096"):
        read_model_info(bad)
    with pytest.raises(ModelFileError, match="outside"):
        Detector(bad)


def test_a_graph_that_is_not_a_score_map_is_refused(trained, tmp_path):
    """An identity graph carrying a real model's metadata: the one-frame self-check catches it."""
    h, w = read_model_info(trained["onnx"]).input_size
    x = helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 3, h, w])
    y = helper.make_tensor_value_info("score", TensorProto.FLOAT, ["batch", 3, h, w])
    graph = helper.make_graph([helper.make_node("Identity", ["image"], ["score"])], "identity", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    for p in onnx.load(str(trained["onnx"])).metadata_props:
        entry = model.metadata_props.add()
        entry.key, entry.value = p.key, p.value
    path = tmp_path / "identity.onnx"
    onnx.save(model, str(path))
    with pytest.raises(ModelFileError, match=r"expected one score map of shape \(1, 1, .*not a FlowCLAS model"):
        Detector(path)


def test_a_directory_is_named_as_such(tmp_path):
    with pytest.raises(ModelFileError, match="is a directory"):
        Detector(tmp_path)
