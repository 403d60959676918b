"""`flowclas-ros quantize`: int8 flow convolutions with real ONNX Runtime quantisation of the
really trained tiny model; the scores, threshold and metadata of the result are checked against
the fp32 model on the toy frames (no timing asserted)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from flowclas_ros.cli import main as cli_main
from flowclas_ros.data.files import read_image_rgb
from flowclas_ros.data.labels import read_sample_label
from flowclas_ros.data.layouts import load_layout
from flowclas_ros.deploy.quantize import flow_conv_nodes, quantize_flow
from flowclas_ros.runtime.detector import Detector
from flowclas_ros.runtime.model_info import ModelFileError
from flowclas_ros.runtime.quantization import FLOW_NODE_PREFIX, QuantizeError


@pytest.fixture(scope="module")
def int8(trained, toy_world, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("int8") / "tiny_int8.onnx"
    report = quantize_flow(trained["onnx"], toy_world / "val", out, frames=6)
    return {"path": out, "report": report}


def _dequantized_inputs(model: onnx.ModelProto) -> set[str]:
    return {o for n in model.graph.node if n.op_type == "DequantizeLinear" for o in n.output}


def test_only_the_flow_convolutions_are_quantised(trained, int8):
    fp32 = onnx.load(str(trained["onnx"]))
    q = onnx.load(str(int8["path"]))
    flow = flow_conv_nodes(fp32)
    assert flow and int8["report"].nodes_quantized == len(flow)
    dq = _dequantized_inputs(q)
    convs = [n for n in q.graph.node if n.op_type == "Conv"]
    assert len(convs) == sum(n.op_type == "Conv" for n in fp32.graph.node)
    for n in convs:
        int8_inputs = [i in dq for i in n.input[:2]]  # data and weight
        if n.name.startswith(FLOW_NODE_PREFIX):
            assert all(int8_inputs), n.name
        else:  # backbone and everything else stay fp32
            assert not any(int8_inputs), n.name
    weights = {t.name: t for t in q.graph.initializer}
    int8_kernels = [t for t in weights.values()  # (not the per-channel zero points)
                    if t.data_type == onnx.TensorProto.INT8 and len(t.dims) == 4]
    assert len(int8_kernels) == len(flow)


def test_scores_stay_close_and_the_threshold_keeps_the_inlier_flag_rate(trained, toy_world, int8):
    r = int8["report"]
    a, b = Detector(trained["onnx"]), Detector(int8["path"])
    assert b.info.extra["precision"].startswith("int8 flow convolutions")
    assert b.info.extra["quantized_from"] == a.info.model_version
    assert b.info.model_version == a.info.model_version + "+int8flow"
    assert b.threshold == pytest.approx(r.threshold_int8) and abs(b.threshold - a.threshold) < 0.5
    same, ref_inl, got_inl, spans = [], [], [], []
    for s in load_layout("generic", toy_world / "test"):
        rgb = read_image_rgb(s.image_path)
        ha, hb = a.heatmap(rgb), b.heatmap(rgb)
        assert np.isfinite(hb).all() and hb.shape == ha.shape
        spans.append(float(ha.max() - ha.min()))
        same.append(((ha > a.threshold) == (hb > b.threshold)).ravel())
        inl = read_sample_label(s, rgb.shape[:2]) == 0
        ref_inl.append(ha[inl])
        got_inl.append(hb[inl])
        assert np.corrcoef(ha.ravel(), hb.ravel())[0, 1] > 0.99
    assert np.concatenate(same).mean() > 0.99
    assert r.mean_abs_diff < 0.05 * np.median(spans)
    # on unseen frames the int8 threshold flags about as many inlier pixels as the fp32 one
    ra = np.mean(np.concatenate(ref_inl) > a.threshold)
    rb = np.mean(np.concatenate(got_inl) > b.threshold)
    assert abs(ra - rb) < 0.01 + 0.5 * ra


def test_calibration_frames_give_the_reported_flag_rate(toy_world, int8):
    r = int8["report"]
    det = Detector(int8["path"])
    samples = load_layout("generic", toy_world / "val")
    pick = np.unique(np.linspace(0, len(samples) - 1, r.frames).round().astype(int))
    inl = []
    for i in pick:
        rgb = read_image_rgb(samples[i].image_path)
        inl.append(det.heatmap(rgb)[read_sample_label(samples[i], rgb.shape[:2]) == 0])
    # the toy frames' size is the model input: no resampling between calibration and heatmap
    rate = np.mean(np.concatenate(inl) > det.threshold)
    assert rate == pytest.approx(r.inlier_flag_rate, abs=2e-3)


def test_a_quantised_model_is_not_quantised_again(toy_world, int8, tmp_path):
    with pytest.raises(QuantizeError, match="already quantised"):
        quantize_flow(int8["path"], toy_world / "val", tmp_path / "twice.onnx", time_it=False)


def test_a_graph_without_flow_convolutions_is_refused(trained, toy_world, tmp_path):
    m = onnx.load(str(trained["onnx"]))
    for n in m.graph.node:
        n.name = n.name.replace(FLOW_NODE_PREFIX, "/renamed/")
    path = tmp_path / "renamed.onnx"
    onnx.save(m, str(path))
    with pytest.raises(QuantizeError, match="no flow convolutions"):
        quantize_flow(path, toy_world / "val", tmp_path / "x.onnx", time_it=False)
    assert not (tmp_path / "x.onnx").exists()


def test_cli_reports_json_and_user_errors(trained, toy_world, tmp_path, capsys):
    out = tmp_path / "q.onnx"
    assert cli_main(["quantize", str(trained["onnx"]), "--data", str(toy_world / "val"),
                     "--out", str(out), "--frames", "3", "--no-timing", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["frames"] == 3 and r["nodes_quantized"] > 0 and out.is_file()
    assert 0 <= r["inlier_flag_rate"] < 0.2 and 0.99 < r["rank_agreement"] <= 1
    assert cli_main(["quantize", str(trained["onnx"]), "--data", str(tmp_path / "nowhere"),
                     "--out", str(tmp_path / "y.onnx")]) == 2
    assert "nowhere" in capsys.readouterr().err
    assert cli_main(["quantize", str(tmp_path / "missing.onnx"), "--data", str(toy_world / "val"),
                     "--out", str(tmp_path / "z.onnx")]) == 2
    assert "missing.onnx" in capsys.readouterr().err
    with pytest.raises(ModelFileError):
        Detector(tmp_path / "y.onnx")


def test_model_card_reads_precision_and_threshold_from_the_model_file(trained, toy_world, int8, tmp_path):
    from flowclas_ros.deploy.model_card import render_card
    from flowclas_ros.eval.evaluate import evaluate

    evaluate(toy_world / "test", int8["path"], out_dir=tmp_path / "rep", progress=False)
    card = render_card(int8["path"], trained["checkpoint"], {"test": tmp_path / "rep"}, "cmd")
    assert "- precision: int8 flow convolutions" in card
    assert f"- threshold: {int8['report'].threshold_int8:.4g} (" in card
    assert "+int8flow" in card
    fp32_card = render_card(trained["onnx"], trained["checkpoint"], {"test": tmp_path / "rep"}, "cmd")
    assert "- precision: fp32" in fp32_card
    other = tmp_path / "other.onnx"  # a model from another run must not get this run's card
    m = onnx.load(str(int8["path"]))
    for p in m.metadata_props:
        if p.key == "config_sha256":
            p.value = "0" * 64
    onnx.save(m, str(other))
    with pytest.raises(ModelFileError, match="not exported from"):
        render_card(other, trained["checkpoint"], {"test": tmp_path / "rep"}, "cmd")


def test_model_card_writes_paths_under_the_working_directory_relative(trained, toy_world, tmp_path,
                                                                      monkeypatch):
    from flowclas_ros.deploy.model_card import relative_paths, render_card
    from flowclas_ros.eval.evaluate import evaluate

    assert relative_paths("data `/repo/data/sim/val` and /elsewhere/x", Path("/repo")) == \
        "data `data/sim/val` and /elsewhere/x"
    evaluate(toy_world / "test", trained["onnx"], out_dir=tmp_path / "rep", progress=False)
    monkeypatch.chdir(toy_world)  # the training data lies under the working directory
    card = render_card(trained["onnx"], trained["checkpoint"], {"test": tmp_path / "rep"}, "cmd")
    assert "`train` (generic); validation `val`" in card and str(toy_world) not in card


def test_a_threshold_that_flags_no_calibration_inlier_is_kept_and_said(trained, toy_world, tmp_path):
    m = onnx.load(str(trained["onnx"]))
    for p in m.metadata_props:
        if p.key == "threshold":
            p.value = "1000000.0"  # flags nothing: the flag rate to carry over is 0
    high = tmp_path / "high.onnx"
    onnx.save(m, str(high))
    r = quantize_flow(high, toy_world / "val", tmp_path / "q.onnx", frames=3, time_it=False)
    assert r.inlier_flag_rate == 0 and r.threshold_int8 == 1e6
    info = Detector(tmp_path / "q.onnx").info
    assert info.threshold == 1e6 and "kept for int8" in info.threshold_rule
    assert "kept: in the reference model (fp32) it flags no inlier pixel" in r.summary()
    assert "timing skipped" in r.summary()


@pytest.fixture(scope="module")
def int8_trained(toy_world, tmp_path_factory) -> dict:
    """A tiny model whose flow trained on the int8 backbone's features (ONNX Runtime in the loop)."""
    from conftest import tiny_config, write_config

    from flowclas_ros.config import load_config
    from flowclas_ros.deploy.export import export_onnx
    from flowclas_ros.training.loop import train

    run = tmp_path_factory.mktemp("int8run")
    raw = tiny_config(toy_world, train={"max_steps": 4, "checkpoint_every": 4, "log_every": 2})
    raw["model"]["backbone"].update(int8_features=True, int8_calibration_frames=4)
    cfg = load_config(write_config(run / "int8.yaml", raw))
    ckpt = train(cfg, run / "out", progress=False)
    export_onnx(ckpt, run / "fp32.onnx")
    return {"cfg": cfg, "checkpoint": ckpt, "onnx": run / "fp32.onnx", "dir": run}


def _activation_scales(model: onnx.ModelProto, strip: str = "") -> dict[str, np.ndarray]:
    from onnx import numpy_helper

    return {i.name.replace(strip, "", 1): numpy_helper.to_array(i) for i in model.graph.initializer
            if i.name.endswith("_output_0_scale")}


def test_int8_feature_training_and_backbone_quantisation_agree(int8_trained):
    from flowclas_ros.model.flowclas import FlowCLAS
    from flowclas_ros.runtime.model_info import INT8_FEATURES_KEY
    from flowclas_ros.training.calibration import feature_extractor

    cfg = int8_trained["cfg"]
    info = Detector(int8_trained["onnx"]).info
    learned = json.loads(info.extra[INT8_FEATURES_KEY])
    assert learned == {"root": cfg.data.val.root, "layout": "generic", "options": {}, "frames": 4}
    # the training's features are the int8 backbone's: close to fp32, not equal
    model = FlowCLAS(cfg.model, seed=cfg.seed)
    extract = feature_extractor(model, cfg)
    x = torch.from_numpy(np.random.default_rng(0).uniform(-1, 1, (2, 3, *cfg.model.input_size)).astype(np.float32))
    fp, q = model.features(x), extract(x)
    assert q.shape == fp.shape and not torch.equal(q, fp)
    assert float((q - fp).abs().mean() / fp.abs().mean()) < 0.5
    torch.testing.assert_close(extract(x), q)  # deterministic
    # quantising the export with its default frames reproduces that backbone exactly
    out = int8_trained["dir"] / "int8.onnx"
    r = quantize_flow(int8_trained["onnx"], None, out, backbone=True, time_it=False)
    assert r.what == "backbone+flow" and r.frames == 4 and r.reference.startswith("int8 backbone")
    full = _activation_scales(onnx.load(str(out)), "/backbone")
    training = _activation_scales(onnx.ModelProto.FromString(extract.model_bytes))
    shared = set(full) & set(training)
    assert len(shared) >= 5
    for name in shared:
        np.testing.assert_array_equal(full[name], training[name], err_msg=name)
    det = Detector(out)
    assert det.info.model_version.endswith("+int8") and "backbone and flow" in det.info.extra["precision"]
    assert r.rank_agreement > 0.99


def test_other_backbone_calibration_frames_than_training_are_warned_about(int8_trained, toy_world,
                                                                        tmp_path, caplog):
    with caplog.at_level("WARNING", logger="flowclas_ros.deploy.quantize"):
        quantize_flow(int8_trained["onnx"], toy_world / "test", tmp_path / "q.onnx", backbone=True,
                      time_it=False)
    assert "other frames than training did" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="flowclas_ros.deploy.quantize"):
        quantize_flow(int8_trained["onnx"], None, tmp_path / "q.onnx", backbone=True, time_it=False)
    assert "other frames" not in caplog.text


def test_backbone_int8_of_a_flow_trained_on_fp32_features_needs_force(trained, toy_world, tmp_path):
    with pytest.raises(QuantizeError, match="trained on fp32 backbone features.*--force"):
        quantize_flow(trained["onnx"], toy_world / "val", tmp_path / "q.onnx", backbone=True,
                      time_it=False)
    r = quantize_flow(trained["onnx"], toy_world / "val", tmp_path / "q.onnx", backbone=True,
                      force=True, time_it=False, frames=3)
    assert r.what == "backbone+flow" and r.reference == "fp32"
    assert "(--force)" in Detector(tmp_path / "q.onnx").info.extra["precision"]
    with pytest.raises(QuantizeError, match="--data is required"):
        quantize_flow(trained["onnx"], None, tmp_path / "x.onnx", time_it=False)


def test_recalibrating_an_int8_feature_model_scores_int8_features(int8_trained, tmp_path):
    from flowclas_ros.model.flowclas import FlowCLAS
    from flowclas_ros.training.calibration import calibrate, recalibrate
    from flowclas_ros.training.checkpoint import load_checkpoint

    cfg = int8_trained["cfg"]
    ckpt = load_checkpoint(int8_trained["checkpoint"])
    model = FlowCLAS(cfg.model, seed=cfg.seed)
    model.head.load_state_dict(ckpt["head"])
    on_int8 = calibrate(model, cfg, torch.device("cpu"))  # the default: the training's features
    assert on_int8["score_offset"] == pytest.approx(ckpt["calibration"]["score_offset"], rel=1e-5)
    on_fp32 = calibrate(model, cfg, torch.device("cpu"), model.features)
    assert on_fp32["score_offset"] != pytest.approx(on_int8["score_offset"], rel=1e-5)
    out = recalibrate(int8_trained["checkpoint"], tmp_path / "re.pt", ["calibration.inlier_fpr=0.05"])
    re = load_checkpoint(out)["calibration"]
    assert re["score_offset"] == pytest.approx(on_int8["score_offset"], rel=1e-5)
    assert "FPR 5%" in re["threshold_rule"]
