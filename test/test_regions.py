"""The region-evidence stage (runtime/regions.py): what it fills, what it must not, its settings
in the model file, and its place in the Detector. The node / replay / evaluator parity of the
stage is in test_replay.py (it needs the sim bag and the real node)."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from flowclas_ros import cli
from flowclas_ros.runtime.regions import REGION_KEY, RegionEvidence, RegionEvidenceError, lift_regions

H, W = 120, 160


def _textured(seed: int = 0) -> np.ndarray:
    """A frame of strong texture (random 4x4-pixel cells)."""
    cells = np.random.default_rng(seed).integers(0, 256, (H // 4, W // 4, 3), dtype=np.uint8)
    return cv2.resize(cells, (W, H), interpolation=cv2.INTER_NEAREST)


def _outline(box: tuple[int, int, int, int], score: float = 3.0, width: int = 2) -> np.ndarray:
    x0, y0, x1, y1 = box
    s = np.zeros((H, W), np.float32)
    cv2.rectangle(s, (x0, y0), (x1 - 1, y1 - 1), score, width)
    return s


BOX = (40, 30, 110, 90)  # x0, y0, x1, y1 of the obstacle's face
FACE = (slice(BOX[1] + 2, BOX[3] - 2), slice(BOX[0] + 2, BOX[2] - 2))  # inside the outline


def test_a_flagged_outline_around_a_uniform_region_of_one_colour_is_filled():
    rgb = _textured()
    rgb[BOX[1]:BOX[3], BOX[0]:BOX[2]] = (128, 128, 128)  # one grey surface
    score = _outline(BOX)
    out = lift_regions(score, rgb, RegionEvidence())
    assert (out[FACE] >= 1.0).all()  # the whole face flagged at the threshold
    outside = np.ones((H, W), bool)
    outside[BOX[1]:BOX[3], BOX[0]:BOX[2]] = False
    np.testing.assert_array_equal(out[outside], score[outside])  # nothing else changed
    np.testing.assert_array_equal(score, _outline(BOX))  # the input is not modified


def test_a_fainter_outline_gives_a_fainter_face():
    rgb = _textured()
    rgb[BOX[1]:BOX[3], BOX[0]:BOX[2]] = (128, 128, 128)
    strong = lift_regions(_outline(BOX, 3.0), rgb, RegionEvidence())[FACE]
    faint = lift_regions(_outline(BOX, 1.2), rgb, RegionEvidence())[FACE]
    assert 1.0 <= faint.min() < strong.min()


@pytest.mark.parametrize("image_edges", [None, (40, 120)])
def test_a_textured_inlier_region_beside_a_flagged_edge_is_not_filled(image_edges):
    rgb = _textured()
    score = np.zeros((H, W), np.float32)
    score[20:100, 60:63] = 3.0  # one flagged edge through the texture
    cfg = RegionEvidence(image_edges=image_edges, min_outline_share=0.5 if image_edges else 0.0)
    out = lift_regions(score, rgb, cfg)
    np.testing.assert_array_equal(out, score)


def test_a_textured_region_inside_a_flagged_outline_is_not_filled():
    rgb = _textured()
    score = _outline(BOX)
    np.testing.assert_array_equal(lift_regions(score, rgb, RegionEvidence()), score)


def test_a_uniform_region_beside_an_open_outline_is_not_filled():
    """Three sides flagged, the fourth open wider than close_px: not enclosed, not filled."""
    rgb = np.full((H, W, 3), 128, np.uint8)
    score = _outline(BOX)
    score[BOX[1] - 2:BOX[3] - 10, BOX[2] - 4:BOX[2] + 2] = 0.0  # most of the right side missing
    changed = lift_regions(score, rgb, RegionEvidence(close_px=5)) != score
    assert changed.sum() <= 10  # at most a pocket the close made in a corner, not the face


def test_image_edges_close_an_outline_the_scores_leave_open():
    """The same open outline, closed by the obstacle's own visible edge (image_edges): filled
    when enough of its border is flagged."""
    rgb = _textured()
    rgb[BOX[1] - 10:BOX[3] + 10, BOX[2] - 20:BOX[2] + 20] = (30, 30, 30)  # dark wall behind its right side
    rgb[BOX[1]:BOX[3], BOX[0]:BOX[2]] = (128, 128, 128)
    score = _outline(BOX)
    score[BOX[1] - 2:BOX[3] - 10, BOX[2] - 4:BOX[2] + 2] = 0.0
    assert (lift_regions(score, rgb, RegionEvidence())[FACE] == 0).mean() > 0.9
    cfg = RegionEvidence(image_edges=(40, 120), min_outline_share=0.5)
    assert (lift_regions(score, rgb, cfg)[FACE] > 0.5).all()
    strict = RegionEvidence(image_edges=(40, 120), min_outline_share=0.95)
    assert (lift_regions(score, rgb, strict)[FACE] == 0).mean() > 0.9


def test_nothing_flagged_is_nothing_changed_and_regions_touching_the_border_stay():
    rgb = np.full((H, W, 3), 90, np.uint8)
    zero = np.zeros((H, W), np.float32)
    np.testing.assert_array_equal(lift_regions(zero, rgb, RegionEvidence()), zero)
    score = np.zeros((H, W), np.float32)
    score[:, 80:82] = 3.0  # splits the frame in two, each half touches the border
    np.testing.assert_array_equal(lift_regions(score, rgb, RegionEvidence()), score)


def test_settings_are_validated_with_the_key_named():
    with pytest.raises(RegionEvidenceError, match="edge"):
        RegionEvidence.from_dict({"edge": 1.0})
    with pytest.raises(RegionEvidenceError, match="close_px"):
        RegionEvidence.from_dict({"close_px": 2.5})
    with pytest.raises(RegionEvidenceError, match="max_area"):
        RegionEvidence(max_area=0.0)
    with pytest.raises(RegionEvidenceError, match="image_edges"):
        RegionEvidence.from_dict({"image_edges": [50]})
    with pytest.raises(RegionEvidenceError, match="not JSON"):
        RegionEvidence.from_json("{")
    cfg = RegionEvidence(edge_score=0.8, image_edges=(30, 90))
    assert RegionEvidence.from_json(cfg.to_json()) == cfg


def test_the_model_file_carries_the_stage_and_the_detector_runs_it(trained, tmp_path, capsys):
    """`flowclas-ros regions` writes the settings into the model's metadata; a Detector on that
    file runs the stage on every frame, regions='off' does not; --off removes it again; a bad
    key is one error line and exit 2."""
    from flowclas_ros.runtime.detector import Detector
    from flowclas_ros.runtime.model_info import read_model_info

    with_stage, without = tmp_path / "with.onnx", tmp_path / "without.onnx"
    assert cli.main(["regions", str(trained["onnx"]), "--out", str(with_stage), "--set",
                     "edge_score=0.5", "--set", "image_edges=[40,120]"]) == 0
    saved = json.loads(read_model_info(with_stage).extra[REGION_KEY])
    assert saved["edge_score"] == 0.5 and saved["image_edges"] == [40, 120]
    det = Detector(with_stage)
    assert det.regions == RegionEvidence(edge_score=0.5, image_edges=(40, 120))
    assert Detector(with_stage, regions="off").regions is None
    assert Detector(trained["onnx"]).regions is None  # a model without it runs without it
    assert cli.main(["regions", str(with_stage), "--out", str(without), "--off"]) == 0
    assert REGION_KEY not in read_model_info(without).extra
    capsys.readouterr()
    assert cli.main(["regions", str(trained["onnx"]), "--out", str(tmp_path / "x.onnx"),
                     "--set", "edge=1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "edge" in err[0] and "known:" in err[0]
    # the stage's timing is reported apart, and a frame goes through it end to end
    rgb = np.full((240, 320, 3), 128, np.uint8)
    d = det.detect(rgb)
    assert "regions" in d.timings_ms and d.heatmap.shape == (240, 320)
    np.testing.assert_array_equal(d.heatmap, det.heatmap(rgb))


def test_a_model_file_with_damaged_region_settings_is_refused_in_one_line(trained, tmp_path, capsys):
    """Settings that are not valid JSON (or name an unknown key) in a model file: the Detector
    refuses the file with ModelFileError naming the key, and the CLI answers one line, exit 2."""
    import dataclasses

    import onnx

    from flowclas_ros.deploy.onnx_metadata import set_metadata
    from flowclas_ros.runtime.detector import Detector
    from flowclas_ros.runtime.model_info import ModelFileError, read_model_info

    info = read_model_info(trained["onnx"])
    bad = tmp_path / "bad.onnx"
    proto = onnx.load(str(trained["onnx"]))
    set_metadata(proto, dataclasses.replace(info, extra={**info.extra, REGION_KEY: '{"edge": 1}'}))
    onnx.save(proto, str(bad))
    with pytest.raises(ModelFileError, match="region_evidence.*edge"):
        Detector(bad)
    assert Detector(bad, regions="off").regions is None  # the model itself still runs
    capsys.readouterr()
    assert cli.main(["detect", str(tmp_path / "none.png"), "--model", str(bad)]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
