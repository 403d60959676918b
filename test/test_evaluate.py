"""Evaluator on the really trained tiny model and the toy test split: metrics vs a direct
scikit-learn computation on the same Detector heatmaps, report files, the CLI verb, errors."""
from __future__ import annotations

import csv
import json
import math
import tempfile

import cv2
import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve
from test_metrics import reference_components

from flowclas_ros import cli
from flowclas_ros.data.files import DatasetError, read_image_rgb
from flowclas_ros.data.generic import generic_layout
from flowclas_ros.data.labels import read_label
from flowclas_ros.eval.evaluate import evaluate
from flowclas_ros.eval.report import to_json
from flowclas_ros.runtime.detector import Detector
from flowclas_ros.runtime.model_info import ModelFileError

REQUIRED = ("auprc", "fpr95", "auroc", "mean_f1", "siou", "ppv", "frames", "ms_per_frame",
            "best_f1", "best_f1_threshold", "anomaly_frames", "frames_without_anomaly_pixels",
            "model", "model_version", "data", "at_model_threshold")
REPORT_FILES = ("pr_curve.png", "roc_curve.png", "montage_worst.png", "montage_best.png",
                "per_frame.csv", "metrics.json")


@pytest.fixture(scope="module")
def cache_root(tmp_path_factory):
    """A private temp dir for the evaluator's heatmap cache, to check it is cleaned up."""
    return tmp_path_factory.mktemp("evalcache")


@pytest.fixture(scope="module")
def report(trained, toy_world, tmp_path_factory, cache_root):
    out = tmp_path_factory.mktemp("report")
    old = tempfile.tempdir
    tempfile.tempdir = str(cache_root)
    try:
        result = evaluate(toy_world / "test", trained["onnx"], out_dir=out, progress=False)
    finally:
        tempfile.tempdir = old
    return result, out


@pytest.fixture(scope="module")
def direct(trained, toy_world):
    """Heatmaps and labels computed directly with the Detector, outside the evaluator."""
    det = Detector(trained["onnx"])
    frames = []
    for s in generic_layout(toy_world / "test"):
        rgb = read_image_rgb(s.image_path)
        frames.append((s.id, det.heatmap(rgb, "rgb8"), read_label(s.label_path)))
    return det, frames


def test_returns_all_keys_with_sane_ranges(report, toy_world):
    r, _ = report
    assert set(REQUIRED) <= set(r)
    n = len(generic_layout(toy_world / "test"))
    assert r["frames"] == n and r["anomaly_frames"] + r["frames_without_anomaly_pixels"] == n
    assert r["anomaly_frames"] == n  # every toy test frame holds an unknown object
    for key in ("auprc", "fpr95", "auroc", "mean_f1", "siou", "ppv", "best_f1"):
        assert 0.0 <= r[key] <= 100.0, key
    assert r["auroc"] > 50.0  # even the seconds-long model ranks anomalies above inliers
    assert 0.0 < r["ms_per_frame"] < 1000.0
    assert r["status"] == "ok" and r["warnings"] == []
    assert r["model_version"] and r["model"].endswith("tiny.onnx")
    assert r["components"]["threshold"] == r["best_f1_threshold"]
    assert r["components"]["threshold_source"] == "pixel_best_f1"
    assert r["pixels"]["anomaly"] > 0 and r["pixels"]["inlier"] > 0


def test_metrics_equal_sklearn_on_the_detector_heatmaps(report, direct):
    r, _ = report
    det, frames = direct
    s = np.concatenate([h[lab != 255] for _, h, lab in frames]).astype(np.float64)
    y = np.concatenate([lab[lab != 255] == 1 for _, _, lab in frames]).astype(int)
    fpr, tpr, _ = roc_curve(y, s, drop_intermediate=False)
    assert r["auprc"] == pytest.approx(100 * average_precision_score(y, s), abs=0.1)
    assert r["auroc"] == pytest.approx(100 * roc_auc_score(y, s), abs=0.1)
    assert r["fpr95"] == pytest.approx(100 * fpr[np.searchsorted(tpr, 0.95)], abs=0.1)
    # the best-F1 threshold reproduces the best F1 on the raw heatmaps
    pred = s >= np.float32(r["best_f1_threshold"])
    tp, fp = int((pred & (y == 1)).sum()), int((pred & (y == 0)).sum())
    assert r["best_f1"] == pytest.approx(100 * 2 * tp / (tp + fp + y.sum()), abs=1e-9)
    # the shipped threshold's behaviour is reported exactly
    m = r["at_model_threshold"]
    pred = s >= np.float32(det.threshold)
    assert m["threshold"] == det.threshold
    assert (m["tp"], m["fp"]) == (int((pred & (y == 1)).sum()), int((pred & (y == 0)).sum()))
    assert m["tpr"] == pytest.approx(100 * m["tp"] / y.sum())
    assert m["fpr"] == pytest.approx(100 * m["fp"] / (y == 0).sum())


def test_component_metrics_equal_the_definition(report, direct):
    """sIoU / PPV / mean F1 against the loop implementation of the definition, thresholding the
    same float16-rounded heatmaps the evaluator caches, with the ObstacleTrack size filters."""
    r, _ = report
    _, frames = direct
    thr = r["components"]["threshold"]
    sious, ppvs = [], []
    for _, heat, lab in frames:
        pred = heat.astype(np.float16).astype(np.float32) >= np.float32(thr)
        siou, ppv = reference_components(pred, lab, 50, 10)
        sious += list(siou)
        ppvs += list(ppv)
    assert r["components"]["gt_components"] == len(sious) > 0
    assert r["components"]["pred_components"] == len(ppvs)
    assert r["siou"] == pytest.approx(100 * np.mean(sious), abs=1e-9)
    if ppvs:
        assert r["ppv"] == pytest.approx(100 * np.mean(ppvs), abs=1e-9)
    f1 = []
    for t in np.linspace(0.25, 0.75, 11):
        tp = sum(v > t for v in sious)
        fp = sum(v < t for v in ppvs)
        f1.append(2 * tp / (2 * tp + (len(sious) - tp) + fp))
    assert r["mean_f1"] == pytest.approx(100 * np.mean(f1), abs=1e-9)


def test_report_files(report, direct):
    r, out = report
    for name in REPORT_FILES:
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    for name in REPORT_FILES[:4]:
        img = cv2.imread(str(out / name))
        assert img is not None and img.ndim == 3 and min(img.shape[:2]) >= 100, name
        assert img.std() > 5, f"{name} looks blank"
    with open(out / "per_frame.csv") as f:
        rows = list(csv.DictReader(f))
    _, frames = direct
    assert [row["id"] for row in rows] == [fid for fid, _, _ in frames]
    for row, (_, heat, lab) in zip(rows, frames):
        assert int(row["anomaly_pixels"]) == int((lab == 1).sum())
        assert float(row["max_score"]) == pytest.approx(float(heat[lab != 255].max()), rel=1e-3)
        assert 0.0 <= float(row["f1"]) <= 100.0 and 0.0 <= float(row["ap"]) <= 100.0
    saved = json.loads((out / "metrics.json").read_text())
    assert saved == json.loads(to_json(r))


def test_cache_is_deleted(report, cache_root):
    assert report[0]["frames"] > 0
    assert list(cache_root.iterdir()) == []


def test_in_memory_samples_and_frames_without_anomalies(trained, toy_world):
    samples = generic_layout(toy_world / "test")[:3]
    data = [(s.id, read_image_rgb(s.image_path), read_label(s.label_path)) for s in samples]
    rgb = data[0][1]
    data.append(("inlier_only", rgb, np.zeros(rgb.shape[:2], np.uint8)))
    r = evaluate(data, trained["onnx"], progress=False)
    assert r["frames"] == 4 and r["anomaly_frames"] == 3
    assert r["frames_without_anomaly_pixels"] == 1
    assert "report" not in r  # no out_dir: metrics only
    r2 = evaluate(toy_world / "test", trained["onnx"], max_frames=2, progress=False)
    assert r2["frames"] == 2


def test_benchmark_layout_labels_are_decoded_through_the_registry(trained, toy_world, tmp_path):
    """A Fishyscapes-Static-coded copy of two toy frames (raw 2 = void) evaluates through
    load_layout + read_sample_label: void pixels are counted as void, not as anomalies."""
    root = tmp_path / "fs_static"
    (root / "original").mkdir(parents=True)
    (root / "labels").mkdir()
    expected_void = expected_anomaly = 0
    for s in generic_layout(toy_world / "test")[:2]:
        raw = read_label(s.label_path).copy()
        raw[:8] = 2  # a void band in Fishyscapes Static coding
        expected_void += int((raw == 2).sum())
        expected_anomaly += int((raw == 1).sum())
        cv2.imwrite(str(root / "original" / f"{s.id}.png"), cv2.imread(str(s.image_path)))
        cv2.imwrite(str(root / "labels" / f"{s.id}.png"), raw)
    r = evaluate(root, trained["onnx"], layout="fishyscapes_static", progress=False)
    assert r["frames"] == 2 and r["layout"] == "fishyscapes_static"
    assert r["pixels"]["void"] == expected_void and r["pixels"]["anomaly"] == expected_anomaly


def test_dataset_without_anomalies_is_reported_not_crashed(trained, toy_world, tmp_path):
    s = generic_layout(toy_world / "test")[0]
    rgb = read_image_rgb(s.image_path)
    data = [("a", rgb, np.zeros(rgb.shape[:2], np.uint8))]
    r = evaluate(data, trained["onnx"], out_dir=tmp_path / "rep", progress=False)
    assert r["status"] == "no_positives" and math.isnan(r["auprc"]) and math.isnan(r["fpr95"])
    assert r["components"]["threshold_source"] == "model" and r["warnings"]
    saved = json.loads((tmp_path / "rep" / "metrics.json").read_text())
    assert saved["auprc"] is None and saved["frames"] == 1
    assert cv2.imread(str(tmp_path / "rep" / "pr_curve.png")) is not None


def test_cli_json_prints_exactly_one_object(trained, toy_world, tmp_path, monkeypatch, capfd):
    rc = cli.main(["evaluate", "--data", str(toy_world / "test"), "--model", str(trained["onnx"]),
                   "--out", str(tmp_path / "rep"), "--json", "--max-frames", "3"])
    out = capfd.readouterr().out
    assert rc == 0
    assert out.count("\n") == 1 and out.endswith("\n")
    obj = json.loads(out)
    assert isinstance(obj, dict) and obj["frames"] == 3 and set(REQUIRED) <= set(obj)
    assert (tmp_path / "rep" / "montage_best.png").is_file()
    rc = cli.main(["evaluate", "--data", str(toy_world / "test"), "--model", str(trained["onnx"]),
                   "--max-frames", "2", "--quiet"])
    out = capfd.readouterr().out
    assert rc == 0 and "AUPRC" in out and "sIoU" in out


def test_cli_components_at_the_model_threshold(trained, toy_world, capfd):
    """`--components-at model`: the component metrics describe the obstacle list at the model's
    own threshold (what the node publishes), not at the pooled best-F1 one."""
    args = ["evaluate", "--data", str(toy_world / "test"), "--model", str(trained["onnx"]),
            "--max-frames", "3", "--json", "--quiet"]
    assert cli.main(args + ["--components-at", "model"]) == 0
    at_model = json.loads(capfd.readouterr().out)["components"]
    assert cli.main(args) == 0
    at_best = json.loads(capfd.readouterr().out)["components"]
    assert at_model["threshold_source"] == "model" and at_best["threshold_source"] == "pixel_best_f1"
    assert at_model["threshold"] == pytest.approx(Detector(trained["onnx"]).info.threshold)


def test_missing_model_or_data_gives_a_clear_error(toy_world, tmp_path, monkeypatch, capsys):
    missing = tmp_path / "nope.onnx"
    with pytest.raises(ModelFileError, match="model file not found"):
        evaluate(toy_world / "test", missing, progress=False)
    rc = cli.main(["evaluate", "--data", str(toy_world / "test"), "--model", str(missing), "--json"])
    captured = capsys.readouterr()
    assert rc == 2 and captured.out == ""
    assert "error: model file not found" in captured.err and str(missing) in captured.err
    with pytest.raises(DatasetError, match="does not exist"):
        evaluate(tmp_path / "no_data", missing, progress=False)
    unlabelled = tmp_path / "unlabelled"
    (unlabelled / "images").mkdir(parents=True)
    cv2.imwrite(str(unlabelled / "images" / "x.png"), np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(DatasetError, match="without labels"):
        evaluate(unlabelled, missing, progress=False)
