"""Outlier-exposure options for small, far and low-contrast obstacles: size sampling and camouflage."""
from __future__ import annotations

import numpy as np
import pytest

from flowclas_ros.config import ConfigError, config_from_dict
from flowclas_ros.data.outliers.cutouts import (
    Cutout,
    CutoutBank,
    PasteConfig,
    camouflage,
    draw_scale,
    paste_outliers,
)
from flowclas_ros.runtime.labels import ANOMALY


def test_log_uniform_sizes_give_small_outliers_as_often_per_octave_as_large_ones():
    rng = np.random.default_rng(0)
    scale = (0.01, 0.32)
    uniform = np.array([draw_scale(rng, scale) for _ in range(4000)])
    log = np.array([draw_scale(rng, scale, "log_uniform") for _ in range(4000)])
    assert uniform.min() >= 0.01 and log.max() <= 0.32
    small = lambda v: float(np.mean(v < 0.04))  # noqa: E731  (two of the five octaves)
    assert small(uniform) < 0.15 and 0.35 < small(log) < 0.45


def _striped_cutout() -> Cutout:
    rgb = np.zeros((20, 20, 3), np.uint8)
    rgb[:, :10] = (255, 0, 0)
    rgb[:, 10:] = (60, 0, 0)
    mask = np.zeros((20, 20), bool)
    mask[2:18, 2:18] = True
    return Cutout(rgb, mask)


def test_camouflage_keeps_the_shading_in_a_colour_of_the_frame():
    frame = np.full((40, 40, 3), (90, 120, 60), np.uint8)
    out = camouflage(_striped_cutout(), frame, np.random.default_rng(0))
    bright, dark = out.rgb[5, 5].astype(float), out.rgb[5, 15].astype(float)
    assert bright.sum() > 2 * dark.sum()  # the cut-out's shading survives
    hue = bright / bright.sum()
    assert np.allclose(hue, np.array([90, 120, 60]) / 270, atol=0.02)  # ... in the frame's colour
    assert np.array_equal(out.mask, _striped_cutout().mask)


def test_pasted_camouflaged_cutouts_are_labelled_anomalous():
    frame = np.full((60, 80, 3), 100, np.uint8)
    cfg = PasteConfig(probability=1.0, count=(1, 1), scale=(0.3, 0.3), camouflage=1.0)
    image, label, pasted = paste_outliers(frame, None, CutoutBank([_striped_cutout()]), cfg, np.random.default_rng(1))
    assert pasted and (label == ANOMALY).sum() > 50
    changed = np.any(image != frame, axis=2)
    assert changed[label != ANOMALY].sum() == 0
    assert np.ptp(image[label == ANOMALY][:, 0]) > 50  # shading, not a flat fill


@pytest.mark.parametrize("key,value", [("size_sampling", "cubic"), ("camouflage", 1.5)])
def test_bad_oe_recipe_options_name_the_key(key, value, tmp_path):
    with pytest.raises(ConfigError, match=f"outlier_exposure.{key}"):
        config_from_dict({"data": {"train": [{"root": str(tmp_path)}]},
                          "outlier_exposure": {key: value}}, tmp_path)


def test_the_model_card_says_what_share_is_camouflaged_and_how_sizes_are_drawn(tmp_path):
    """A card that hides camouflage or log-uniform sizes would not let a user rebuild the model."""
    from flowclas_ros.deploy.model_card import describe_oe

    base = {"data": {"train": [{"root": str(tmp_path)}]}, "outlier_exposure": {"bank": str(tmp_path)}}
    plain = describe_oe(config_from_dict(base, tmp_path).outlier_exposure)
    assert "camouflaged" not in plain and "sizes drawn" not in plain
    base["outlier_exposure"].update(camouflage=0.5, size_sampling="log_uniform")
    line = describe_oe(config_from_dict(base, tmp_path).outlier_exposure)
    assert "50% camouflaged" in line and "sizes drawn log-uniform" in line
