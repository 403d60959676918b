"""Recall at the model threshold by obstacle size, and the evaluator's report of it."""
from __future__ import annotations

import json
import math

import numpy as np

from flowclas_ros.eval.size_recall import SIZE_BUCKETS, SizeRecall, bucket_of
from flowclas_ros.runtime.labels import ANOMALY, VOID


def test_buckets_cover_every_area_once():
    assert [bucket_of(a) for a in (1, 199, 200, 999, 1000, 4999, 5000, 10**6)] == [
        "<200", "<200", "200-1000", "200-1000", "1000-5000", "1000-5000", ">=5000", ">=5000"]
    assert [name for name, _, _ in SIZE_BUCKETS] == ["<200", "200-1000", "1000-5000", ">=5000"]


def test_pixel_recall_and_hit_rate_per_bucket():
    label = np.zeros((200, 300), np.uint8)
    heat = np.zeros((200, 300), np.float32)
    label[0:10, 0:10] = ANOMALY          # 100 px, missed
    label[20:30, 0:10] = ANOMALY         # 100 px, 30 px flagged
    heat[20:23, 0:10] = 2.0
    label[50:70, 50:80] = ANOMALY        # 600 px, all flagged
    heat[50:70, 50:80] = 1.0             # == threshold counts as flagged
    label[100:160, 100:200] = ANOMALY    # 6000 px, half flagged
    heat[100:130, 100:200] = 5.0
    label[190:200, 290:300] = VOID       # void is never an obstacle
    heat[0:5, 200:300] = 9.0             # a false alarm changes no recall
    sr = SizeRecall(threshold=1.0)
    sr.update(heat, label)
    r = sr.result()
    assert r["<200"] == {"objects": 2, "pixels": 200, "pixel_recall": 15.0, "hit_rate": 50.0}
    assert r["200-1000"] == {"objects": 1, "pixels": 600, "pixel_recall": 100.0, "hit_rate": 100.0}
    assert r[">=5000"]["objects"] == 1 and r[">=5000"]["pixel_recall"] == 50.0
    assert r["1000-5000"]["objects"] == 0 and math.isnan(r["1000-5000"]["pixel_recall"])
    sr.update(heat, label)  # streaming: a second frame adds up
    assert sr.result()["<200"]["objects"] == 4 and sr.result()["<200"]["pixel_recall"] == 15.0


def test_evaluate_reports_recall_by_size_at_the_model_threshold(trained, toy_world, tmp_path):
    from flowclas_ros.data.files import read_image_rgb
    from flowclas_ros.data.generic import generic_layout
    from flowclas_ros.data.labels import read_sample_label
    from flowclas_ros.eval.evaluate import evaluate
    from flowclas_ros.eval.report import format_summary
    from flowclas_ros.runtime.detector import Detector

    r = evaluate(toy_world / "test", trained["onnx"], out_dir=tmp_path / "rep", progress=False)
    by_size = r["recall_by_size"]
    det = Detector(trained["onnx"])
    mine = SizeRecall(det.threshold)
    for s in generic_layout(toy_world / "test"):
        mine.update(det.heatmap(read_image_rgb(s.image_path)),
                    read_sample_label(s))
    assert json.loads(json.dumps(by_size, default=str)).keys() == mine.result().keys()
    for name, b in mine.result().items():
        assert by_size[name]["objects"] == b["objects"] and by_size[name]["pixels"] == b["pixels"]
        if b["objects"]:
            assert abs(by_size[name]["pixel_recall"] - b["pixel_recall"]) < 1e-6
    assert sum(b["pixels"] for b in by_size.values()) == r["pixels"]["anomaly"]
    saved = json.loads((tmp_path / "rep" / "metrics.json").read_text())
    assert set(saved["recall_by_size"]) == set(by_size)
    assert "recall at the model threshold by obstacle size" in format_summary(r)
    rows = (tmp_path / "rep" / "per_frame.csv").read_text().splitlines()
    assert rows[0].split(",")[:3] == ["id", "f1", "f1_model"]


def test_model_card_tabulates_recall_by_size_per_split():
    from flowclas_ros.deploy.model_card import size_table

    by_size = {"<200": {"objects": 3, "pixel_recall": 25.0, "hit_rate": 33.333},
               ">=5000": {"objects": 1, "pixel_recall": 100.0, "hit_rate": 100.0}}
    lines = size_table({"val": {"recall_by_size": by_size}, "test": {"auprc": 1.0}})
    assert "| split | <200 px | >=5000 px |" in lines
    assert "| val | 25.00 (33.33; 3 obstacles) | 100.00 (100.00; 1 obstacles) |" in lines
    assert not any(line.startswith("| test") for line in lines)
    assert size_table({"test": {"auprc": 1.0}}) == []


def _two_obstacle_frame() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A grey wall frame with a grey obstacle (low contrast) and a red one (high contrast)."""
    rgb = np.full((120, 160, 3), 128, np.uint8)
    label = np.zeros((120, 160), np.uint8)
    rgb[20:50, 20:50] = (134, 134, 134)  # Delta E about 2.4 against the wall
    label[20:50, 20:50] = ANOMALY
    rgb[60:100, 90:140] = (220, 30, 30)
    label[60:100, 90:140] = ANOMALY
    heat = np.zeros((120, 160), np.float32)
    heat[60:100, 90:140] = 2.0  # the red one is found, the grey one missed
    return rgb, heat, label


def test_contrast_of_an_obstacle_is_its_colour_distance_to_its_ring():
    from flowclas_ros.eval.size_recall import contrast_bucket_of, obstacle_contrasts

    rgb, _, label = _two_obstacle_frame()
    grey, red = obstacle_contrasts(rgb, label)
    assert 1.0 < grey < 5.0 and red > 60.0
    assert [contrast_bucket_of(v) for v in (0.0, 9.9, 10.0, 25.0, 40.0, 300.0)] == [
        "<10", "<10", "10-20", "20-40", ">=40", ">=40"]
    full = np.ones((10, 10), np.uint8)  # an obstacle filling the frame has no ring: no contrast
    assert np.isnan(obstacle_contrasts(np.zeros((10, 10, 3), np.uint8), full)).all()


def test_recall_by_contrast_and_the_low_contrast_misses():
    from flowclas_ros.eval.size_recall import ContrastRecall, low_contrast_misses

    rgb, heat, label = _two_obstacle_frame()
    cr = ContrastRecall(threshold=1.0)
    cr.update(heat, label, rgb)
    r = cr.result()
    assert r["<10"] == {"objects": 1, "pixels": 900, "pixel_recall": 0.0, "hit_rate": 0.0}
    assert r[">=40"] == {"objects": 1, "pixels": 2000, "pixel_recall": 100.0, "hit_rate": 100.0}
    missed = low_contrast_misses(rgb, heat, label, 1.0)
    assert missed[20:50, 20:50].all() and missed.sum() == 900  # the grey one, not the red one
    heat[20:50, 20:50] = 2.0
    assert not low_contrast_misses(rgb, heat, label, 1.0).any()  # found: no longer a miss


def test_evaluation_reports_recall_by_contrast_and_the_montage_marks_low_contrast_misses(
        trained, tmp_path):
    """The evaluator's streaming core (what evaluate and replay feed) fed known heatmaps: recall
    by contrast beside recall by size in the result, summary and metrics.json; the worst-frame
    montage outlines the missed grey obstacle in magenta, and not once it is found."""
    import cv2

    from flowclas_ros.eval.evaluate import Evaluation
    from flowclas_ros.eval.report import LOW_CONTRAST_MISS_COLOR, format_summary
    from flowclas_ros.runtime.detector import Detector

    rgb, heat, label = _two_obstacle_frame()
    found = heat.copy()
    found[20:50, 20:50] = 2.0
    magenta = np.array(LOW_CONTRAST_MISS_COLOR)
    counts = {}
    for name, h in (("missed", heat), ("found", found)):
        with Evaluation(Detector(trained["onnx"], threshold=1.0)) as ev:
            for i in range(2):
                ev.add(f"f{i}", h, label, 1.0, rgb)
            r = ev.finish("synthetic", "generic")
            ev.write_report(tmp_path / name, r, lambda i: rgb)
        montage = cv2.imread(str(tmp_path / name / "montage_worst.png"))
        counts[name] = int(np.count_nonzero(np.all(montage == magenta, axis=2)))
        assert r["recall_by_contrast"]["<10"]["objects"] == 2 and "recall_by_size" in r
        assert "by obstacle contrast" in format_summary(r)
        saved = json.loads((tmp_path / name / "metrics.json").read_text())
        assert saved["recall_by_contrast"]["<10"]["pixel_recall"] == (0.0 if name == "missed" else 100.0)
    assert counts["missed"] > 50 and counts["found"] < counts["missed"] / 10
