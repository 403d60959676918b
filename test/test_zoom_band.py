"""The zoomed band (runtime/zoom_band.py): where its rows lie, that its tiles map back onto the
frame pixel for pixel, how it joins the frame's heatmap, its settings in the model file, and its
fit on a labelled val (`flowclas-ros zoom`). Node / replay / evaluator parity: test_replay.py."""
from __future__ import annotations

import json

import numpy as np
import pytest

from flowclas_ros import cli
from flowclas_ros.runtime.zoom_band import (
    ZOOM_KEY,
    ZoomBand,
    ZoomBandError,
    band_heatmap,
    join_band,
    tile_offsets,
)


def test_the_band_is_frame_height_over_zoom_rows_around_its_center_and_stays_inside():
    assert ZoomBand(center=0.5, zoom=2).rows(480) == (120, 360)
    assert ZoomBand(center=0.0, zoom=2).rows(480) == (0, 240)  # clipped at the top
    assert ZoomBand(center=1.0, zoom=4).rows(480) == (360, 480)  # and at the bottom
    assert ZoomBand(center=0.3, zoom=1.5).rows(100) == (0, 67)


def test_tiles_cover_the_magnified_band_and_overlap_when_the_width_does_not_divide():
    assert tile_offsets(640, 1280) == [0, 640]
    offsets = tile_offsets(640, 960)
    assert offsets == [0, 320] and offsets[-1] + 640 == 960
    assert tile_offsets(640, 640) == [0]


@pytest.mark.parametrize("zoom", [2.0, 1.5, 3.0])
def test_the_tiles_heatmap_comes_back_onto_the_bands_own_pixels(zoom):
    """With a 'model' whose heatmap is the image's red channel, the band's heatmap is the band's
    red channel again (up to interpolation): the magnify, tile, place back and reduce steps keep
    every pixel where it was."""
    h, w = 96, 128
    yy, xx = np.mgrid[0:h, 0:w]
    rgb = np.zeros((h, w, 3), np.uint8)
    rgb[..., 0] = xx + yy  # a smooth ramp (no wrap): interpolation error stays small
    band = ZoomBand(center=0.4, zoom=zoom)
    seen = []

    def red(img: np.ndarray) -> np.ndarray:
        seen.append(img.shape)
        return img[..., 0].astype(np.float32)

    out = band_heatmap(rgb, band, red)
    top, end = band.rows(h)
    assert out.shape == (end - top, w)
    assert all(s == (h, w, 3) for s in seen)  # every tile is frame-sized
    inner = (slice(2, -2), slice(2, -2))  # the outermost pixels see the resize's border rule
    assert np.abs(out[inner] - rgb[top:end, :, 0].astype(np.float32)[inner]).max() <= 0.5  # a row off: >= 1


def test_the_band_joins_by_the_larger_score_after_its_scale_and_nothing_outside_changes():
    heat = np.full((8, 4), 1.0, np.float32)
    band = ZoomBand(center=0.5, zoom=2.0, scale=2.0)  # rows 2..6
    scores = np.array([[0.2], [0.6], [0.4], [0.9]], np.float32) * np.ones((1, 4), np.float32)
    out = join_band(heat, scores, band)
    np.testing.assert_array_equal(out[:2], heat[:2])
    np.testing.assert_array_equal(out[6:], heat[6:])
    np.testing.assert_allclose(out[2:6, 0], [1.0, 1.2, 1.0, 1.8])
    assert heat.max() == 1.0  # the input is not written to


def test_settings_are_validated_with_the_key_named():
    for bad, key in (({"zoom": 1.0}, "zoom"), ({"zoom": 9}, "zoom"), ({"center": 1.5}, "center"),
                     ({"scale": 0}, "scale"), ({"scale": float("nan")}, "scale")):
        with pytest.raises(ZoomBandError, match=key):
            ZoomBand.from_dict(bad)
    with pytest.raises(ZoomBandError, match="known: center, scale, zoom"):
        ZoomBand.from_dict({"centre": 0.5})
    with pytest.raises(ZoomBandError, match="zoom.*not a number"):
        ZoomBand.from_dict({"zoom": "2"})
    with pytest.raises(ZoomBandError, match="not JSON"):
        ZoomBand.from_json("{zoom: 2")
    band = ZoomBand(center=0.45, zoom=2.5, scale=1.25)
    assert ZoomBand.from_json(band.to_json()) == band


def test_the_cli_fits_the_band_on_a_val_and_the_detector_runs_it(trained, toy_world, tmp_path, capsys):
    """`flowclas-ros zoom --val` writes the band and its threshold into the model file and prints
    what it derived; the val's inlier false-alarm rate is kept; a Detector on that file runs the
    band on every frame (detect and heatmap agree), zoom='off' does not; --off removes it."""
    from flowclas_ros.eval.zoom_calibration import fit_zoom_band
    from flowclas_ros.runtime.detector import Detector
    from flowclas_ros.runtime.model_info import read_model_info

    fit = fit_zoom_band(trained["onnx"], toy_world / "val")
    assert fit.frames == 8 and 0 <= fit.band.center <= 1 and fit.band.scale > 0
    assert fit.inlier_fpr[1] == pytest.approx(fit.inlier_fpr[0], abs=0.5)  # % of sampled inlier pixels

    zoomed, plain = tmp_path / "zoomed.onnx", tmp_path / "plain.onnx"
    assert cli.main(["zoom", str(trained["onnx"]), "--val", str(toy_world / "val"), "--out", str(zoomed)]) == 0
    out = capsys.readouterr().out
    assert "zoomed band: center" in out and "threshold" in out and "val inlier FPR" in out
    info = read_model_info(zoomed)
    saved = ZoomBand.from_json(info.extra[ZOOM_KEY])
    assert saved == fit.band and info.threshold == pytest.approx(fit.threshold)
    assert "zoomed band" in info.threshold_rule
    det = Detector(zoomed)
    assert det.zoom == saved and Detector(zoomed, zoom="off").zoom is None
    assert Detector(trained["onnx"]).zoom is None  # a model without it runs without it
    rgb = np.random.default_rng(0).integers(0, 256, (64, 80, 3), dtype=np.uint8)
    d = det.detect(rgb)
    assert "zoom" in d.timings_ms and d.heatmap.shape == (64, 80)
    np.testing.assert_array_equal(d.heatmap, det.heatmap(rgb))
    expected = join_band(det.frame_heatmap(rgb), band_heatmap(rgb, saved, det.frame_heatmap), saved)
    np.testing.assert_array_equal(d.heatmap, expected)
    assert cli.main(["zoom", str(zoomed), "--out", str(plain), "--off"]) == 0
    assert ZOOM_KEY not in read_model_info(plain).extra


@pytest.mark.parametrize("args, word", [
    (["--zoom", "9"], "zoom"), (["--center", "2"], "center"), ([], "--val"),
    (["--max-frames", "0"], "max-frames"), (["--threshold", "1"], "--off"),
])
def test_bad_zoom_arguments_are_one_line_and_exit_2(trained, toy_world, tmp_path, capsys, args, word):
    val = [] if args == [] else ["--val", str(toy_world / "val")]
    assert cli.main(["zoom", str(trained["onnx"]), "--out", str(tmp_path / "x.onnx"), *val, *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and word in err[0]
    assert not (tmp_path / "x.onnx").exists()


def test_a_model_file_with_damaged_band_settings_is_refused_in_one_line(trained, tmp_path, capsys):
    import dataclasses

    import onnx

    from flowclas_ros.deploy.onnx_metadata import set_metadata
    from flowclas_ros.runtime.detector import Detector
    from flowclas_ros.runtime.model_info import ModelFileError, read_model_info

    info = read_model_info(trained["onnx"])
    bad = tmp_path / "bad.onnx"
    proto = onnx.load(str(trained["onnx"]))
    set_metadata(proto, dataclasses.replace(info, extra={**info.extra, ZOOM_KEY: json.dumps({"zoom": 40})}))
    onnx.save(proto, str(bad))
    with pytest.raises(ModelFileError, match="zoom_band.*zoom"):
        Detector(bad)
    assert Detector(bad, zoom="off").zoom is None
    capsys.readouterr()
    assert cli.main(["detect", str(tmp_path / "none.png"), "--model", str(bad)]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
