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
