"""Detector on a really trained + exported model, real ONNX Runtime; model-file errors."""
from __future__ import annotations

import logging

import cv2
import numpy as np
import onnx
import pytest
from conftest import TINY_SIZE

from flowclas_ros.data.files import read_image_rgb
from flowclas_ros.data.generic import generic_layout
from flowclas_ros.data.labels import read_label
from flowclas_ros.deploy.open_model import open_detector
from flowclas_ros.runtime.detector import Detector
from flowclas_ros.runtime.model_info import ModelFileError, resolve_model_path


@pytest.fixture(scope="module")
def detector(trained):
    return Detector(trained["onnx"], min_area=4)


@pytest.fixture(scope="module")
def frame(toy_world):
    sample = generic_layout(toy_world / "test")[0]
    return read_image_rgb(sample.image_path), read_label(sample.label_path)


def test_outputs_at_input_resolution(detector, frame):
    rgb, _ = frame
    big = cv2.resize(rgb, (TINY_SIZE[1] * 3, TINY_SIZE[0] * 3))  # a camera larger than the model
    d = detector.detect(big, "rgb8")
    assert d.heatmap.shape == big.shape[:2] and d.heatmap.dtype == np.float32
    assert d.mask.shape == big.shape[:2] and d.mask.dtype == np.uint8
    assert np.isfinite(d.heatmap).all()
    assert set(d.timings_ms) >= {"preprocess", "inference", "postprocess", "total"}


def test_mask_is_thresholded_heatmap_after_min_area(detector, frame):
    rgb, _ = frame
    d = detector.detect(rgb, "rgb8")
    raw = (d.heatmap >= detector.threshold).astype(np.uint8)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(raw, connectivity=8)
    keep = np.zeros(n, bool)
    keep[1:] = stats[1:, cv2.CC_STAT_AREA] >= detector.min_area
    np.testing.assert_array_equal(d.mask == 255, keep[labels])
    assert len(d.obstacles) == int(keep.sum())
    for o in d.obstacles:
        assert o.area >= detector.min_area and o.peak_score >= detector.threshold
        assert o.mean_score <= o.peak_score


def test_trained_model_scores_anomalies_above_inliers(detector, toy_world):
    """Even the seconds-long test model ranks pasted-in unknown objects above the scene."""
    anom, inl = [], []
    for s in generic_layout(toy_world / "test"):
        heat = detector.heatmap(read_image_rgb(s.image_path), "rgb8")
        lab = read_label(s.label_path)
        anom.append(heat[lab == 1])
        inl.append(heat[lab == 0])
    assert np.median(np.concatenate(anom)) > np.quantile(np.concatenate(inl), 0.75)


def test_encodings_give_consistent_heatmaps(detector, frame):
    rgb, _ = frame
    ref = detector.heatmap(rgb, "rgb8")
    np.testing.assert_allclose(detector.heatmap(np.ascontiguousarray(rgb[..., ::-1]), "bgr8"), ref,
                               atol=1e-5)
    rgba = np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)])
    np.testing.assert_allclose(detector.heatmap(rgba, "rgba8"), ref, atol=1e-5)
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    g8 = detector.heatmap(gray, "mono8")
    g16 = detector.heatmap(gray.astype(np.uint16) * 257, "mono16")
    assert g8.shape == rgb.shape[:2]
    np.testing.assert_allclose(g16, g8, atol=1e-5)  # 16-bit full range == 8-bit


def test_torch_backend_matches_onnxruntime(trained, frame):
    rgb, _ = frame
    ort_heat = Detector(trained["onnx"]).heatmap(rgb)
    torch_det = open_detector(trained["checkpoint"])
    assert torch_det.backend.name == "torch"
    torch_heat = torch_det.heatmap(rgb)
    span = float(torch_heat.max() - torch_heat.min())
    assert np.abs(ort_heat - torch_heat).max() < 1e-3 * span


def test_unavailable_providers_fall_back_to_cpu_with_a_log_line(trained, caplog):
    with caplog.at_level(logging.WARNING, logger="flowclas_ros.runtime"):
        det = Detector(trained["onnx"], providers=("tensorrt", "cuda", "cpu"))
    assert det.providers == ["CPUExecutionProvider"]
    assert "'tensorrt' is not available" in caplog.text and "'cuda' is not available" in caplog.text


def test_missing_model_file(tmp_path):
    with pytest.raises(ModelFileError, match="model file not found: .*nope.onnx"):
        Detector(tmp_path / "nope.onnx")


def test_corrupt_model_file(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x07this is not protobuf" * 10)
    with pytest.raises(ModelFileError, match="not a loadable ONNX model"):
        Detector(bad)


def test_truncated_model_file(trained, tmp_path):
    data = trained["onnx"].read_bytes()
    cut = tmp_path / "cut.onnx"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFileError, match="not a loadable ONNX model"):
        Detector(cut)


def _with_metadata(src, dst, edit):
    proto = onnx.load(str(src))
    meta = {p.key: p.value for p in proto.metadata_props}
    edit(meta)
    del proto.metadata_props[:]
    for k, v in meta.items():
        e = proto.metadata_props.add()
        e.key, e.value = k, v
    onnx.save(proto, str(dst))
    return dst


def test_foreign_or_mismatched_models_are_refused(trained, tmp_path):
    src = trained["onnx"]
    foreign = _with_metadata(src, tmp_path / "foreign.onnx", lambda m: m.clear())
    with pytest.raises(ModelFileError, match="not a flowclas_ros model"):
        Detector(foreign)
    wrong = _with_metadata(src, tmp_path / "wrong.onnx",
                           lambda m: m.__setitem__("input_size", "[480, 640]"))
    with pytest.raises(ModelFileError, match="does not match the metadata"):
        Detector(wrong)
    newer = _with_metadata(src, tmp_path / "newer.onnx",
                           lambda m: m.__setitem__("flowclas.format_version", "99"))
    with pytest.raises(ModelFileError, match="newer than this runtime"):
        Detector(newer)
    lacking = _with_metadata(src, tmp_path / "lacking.onnx", lambda m: m.pop("threshold"))
    with pytest.raises(ModelFileError, match="lacks required key 'threshold'"):
        Detector(lacking)


def test_default_model_resolution(trained, tmp_path, monkeypatch):
    monkeypatch.setenv("FLOWCLAS_MODEL", str(trained["onnx"]))
    assert resolve_model_path(None) == trained["onnx"]
    assert Detector().info.input_size == TINY_SIZE
    monkeypatch.setenv("FLOWCLAS_MODEL", str(tmp_path / "absent.onnx"))
    monkeypatch.setattr("flowclas_ros.runtime.model_info.DEFAULT_MODEL_NAME", "absent.onnx")
    with pytest.raises(ModelFileError, match="no default model found .*FLOWCLAS_MODEL"):
        resolve_model_path(None)


def test_a_bare_name_is_looked_up_among_the_shipped_models(tmp_path, monkeypatch):
    from flowclas_ros.runtime.model_info import shipped_model_dirs

    monkeypatch.chdir(tmp_path)  # not in the working directory
    src_models = shipped_model_dirs()[0]
    assert resolve_model_path("flowclas_default_int8.onnx") == src_models / "flowclas_default_int8.onnx"
    assert "precision" in Detector("flowclas_default_int8.onnx").info.extra
    with pytest.raises(ModelFileError, match="not in the working directory nor among the shipped"):
        resolve_model_path("no_such_model.onnx")
    with pytest.raises(ModelFileError, match="model file not found: sub/no_such_model.onnx$"):
        resolve_model_path("sub/no_such_model.onnx")  # a path is taken as given


def test_role_names_pick_the_shipped_models(tmp_path, monkeypatch):
    from flowclas_ros.runtime.model_info import DEFAULT_MODEL_NAME, MODEL_ALIASES, shipped_model_dirs

    monkeypatch.chdir(tmp_path)
    src_models = shipped_model_dirs()[0]
    assert MODEL_ALIASES["fast"] == DEFAULT_MODEL_NAME  # the default is the fast model
    for role, name in MODEL_ALIASES.items():  # every role names a model that is shipped
        assert resolve_model_path(role) == src_models / name
    assert Detector("accurate").model_path == src_models / MODEL_ALIASES["accurate"]


def test_threshold_override(trained, frame):
    rgb, _ = frame
    low = Detector(trained["onnx"], threshold=-1e9).detect(rgb)
    assert (low.mask == 255).all() and len(low.obstacles) == 1


def test_tensorrt_provider_options_enable_the_engine_cache(tmp_path):
    from flowclas_ros.runtime.backends import ort_providers

    avail = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    chosen = ort_providers(["tensorrt", "cuda"], avail, str(tmp_path / "cache"), trt_fp16=True)
    name, opts = chosen[0]
    assert name == "TensorrtExecutionProvider"
    assert opts["trt_engine_cache_enable"] is True and opts["trt_fp16_enable"] is True
    assert opts["trt_engine_cache_path"] == str(tmp_path / "cache")
    assert chosen[1:] == ["CUDAExecutionProvider", "CPUExecutionProvider"]


@pytest.mark.skipif("TensorrtExecutionProvider" not in __import__("onnxruntime").get_available_providers(),
                    reason="needs onnxruntime-gpu with TensorRT (a GPU machine)")
def test_tensorrt_engine_is_built_cached_and_matches_cpu(trained, frame, tmp_path):
    rgb, _ = frame
    cache = tmp_path / "trt"
    det = Detector(trained["onnx"], providers=("tensorrt",), trt_cache_dir=str(cache))
    assert det.providers[0] == "TensorrtExecutionProvider"
    heat = det.heatmap(rgb)
    assert any(cache.iterdir())  # engine written once, reused by the next session
    ref = Detector(trained["onnx"]).heatmap(rgb)
    assert np.abs(heat - ref).max() < 1e-2 * float(ref.max() - ref.min())


def test_detect_cli_goes_on_past_a_bad_file_and_checks_its_arguments(trained, toy_world, tmp_path, capsys):
    from flowclas_ros.cli import main as cli_main

    good = sorted((toy_world / "test" / "images").glob("*.png"))[:2]
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    rc = cli_main(["detect", str(good[0]), str(bad), str(good[1]), "--model", str(trained["onnx"])])
    out, err = capsys.readouterr()
    assert rc == 2 and len(out.strip().splitlines()) == 2  # both good images processed
    assert err.count("flowclas-ros: error:") == 1 and "bad.png" in err
    a_file = tmp_path / "file"
    a_file.write_text("x")
    assert cli_main(["detect", str(good[0]), "--model", str(trained["onnx"]), "--out", str(a_file)]) == 2
    assert "exists and is not a directory" in capsys.readouterr().err
    for args in (["--threshold", "nan"], ["--min-area", "-5"]):
        with pytest.raises(SystemExit) as exc:
            cli_main(["detect", str(good[0]), *args])
        assert exc.value.code == 2


def test_detect_cli_uses_the_node_min_area_by_default():
    from flowclas_ros.cli import build_parser
    from flowclas_ros.runtime.node_interface import default

    assert build_parser().parse_args(["detect", "x.png"]).min_area == default("min_obstacle_area") == 50
