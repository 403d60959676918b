"""ONNX export: one self-describing file, opset >= 17, parity with torch on real frames."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from conftest import TINY_SIZE, tiny_config, write_config

from flowclas_ros.cli import main as cli_main
from flowclas_ros.config import load_config
from flowclas_ros.deploy.export import check_parity, export_onnx, parity_images
from flowclas_ros.runtime.model_info import OPSET, ModelInfo
from flowclas_ros.training.checkpoint import CheckpointError
from flowclas_ros.training.loop import train


def test_exported_graph_and_metadata(trained):
    proto = onnx.load(str(trained["onnx"]))
    onnx.checker.check_model(proto)
    assert max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) >= max(OPSET, 17)
    meta = {p.key: p.value for p in proto.metadata_props}
    info = ModelInfo.from_metadata(meta, "test")
    cfg = trained["config"]
    assert info.input_size == TINY_SIZE
    assert info.mean == (0.5, 0.5, 0.5) and info.std == (0.5, 0.5, 0.5)
    assert info.config_sha256 == cfg.sha256()
    assert info.threshold == 1.0 and "inlier-pixel FPR 1%" in info.threshold_rule
    assert info.score_scale > 0 and info.model_version.endswith(f".s{cfg.train.max_steps}")
    assert info.feature_stride == 8 and info.resize_policy == "stretch"
    # no training-only parts in the graph: the contrastive projection is not exported
    names = {i.name for i in proto.graph.initializer}
    assert not any("projection" in n for n in names)
    # the graph maps an image batch to a score map of the same size (dynamic batch)
    sess = ort.InferenceSession(str(trained["onnx"]), providers=["CPUExecutionProvider"])
    out = sess.run(None, {"image": np.zeros((2, 3, *TINY_SIZE), np.float32)})[0]
    assert out.shape == (2, 1, *TINY_SIZE) and np.isfinite(out).all()


def test_backend_fixes_the_batch_for_speed_and_can_keep_it_dynamic(trained):
    from flowclas_ros.runtime.backends import OnnxRuntimeBackend

    x = np.random.default_rng(0).normal(size=(2, 3, *TINY_SIZE)).astype(np.float32)
    dynamic = OnnxRuntimeBackend(trained["onnx"], batch=None)
    both = dynamic(x)
    fixed = OnnxRuntimeBackend(trained["onnx"])  # the runtime's default: one frame per run
    np.testing.assert_allclose(fixed(x[:1]), both[:1], rtol=1e-5, atol=1e-5)
    with pytest.raises(Exception, match="(?i)dimension|shape"):
        fixed(x)  # a fixed batch of 1 refuses 2 instead of silently computing something else


def test_parity_onnxruntime_vs_torch_on_real_frames(trained, toy_world):
    frames = parity_images(trained["config"], limit=4, data_dir=str(toy_world / "test"))
    res = check_parity(trained["checkpoint"], trained["onnx"], frames)
    assert res["frames"] == 4
    assert res["relative"] < 1e-3, res
    assert res["score_range"] > 0.1  # a real score map, not a constant


def test_cli_export_check(trained, tmp_path, capsys):
    out = tmp_path / "m.onnx"
    assert cli_main(["export", str(trained["checkpoint"]), "--out", str(out), "--check"]) == 0
    text = capsys.readouterr().out
    assert "parity onnxruntime vs torch" in text and "-> OK" in text
    assert out.is_file() and not list(tmp_path.glob(".*tmp*"))


def test_export_refuses_an_unfinished_checkpoint(toy_world, tmp_path):
    cfg = load_config(write_config(tmp_path / "c.yaml", tiny_config(toy_world)))
    partial = train(cfg, tmp_path / "run", stop_at=2, progress=False)
    with pytest.raises(CheckpointError, match="no calibration"):
        export_onnx(partial, tmp_path / "x.onnx")
    assert not (tmp_path / "x.onnx").exists()
