"""The one pre/post-processing path: geometry, normalisation, heatmap mapping, components."""
from __future__ import annotations

import numpy as np
import pytest

from flowclas_ros.runtime.processing import (
    fit_geometry,
    heatmap_to_source,
    label_to_input,
    preprocess,
    threshold_components,
)

MEAN, STD = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)


def test_stretch_preprocess_normalises_and_orders_channels():
    rgb = np.zeros((48, 64, 3), np.uint8)
    rgb[..., 0] = 255  # pure red
    x, geom = preprocess(rgb, (24, 32), MEAN, STD, "stretch")
    assert x.shape == (3, 24, 32) and x.dtype == np.float32 and x.flags.c_contiguous
    np.testing.assert_allclose(x[0], 1.0, atol=1e-6)  # (1 - 0.5) / 0.5
    np.testing.assert_allclose(x[1:], -1.0, atol=1e-6)
    assert geom.content_hw == (24, 32) and (geom.top, geom.left) == (0, 0)


def test_letterbox_keeps_aspect_and_pads_with_the_mean():
    geom = fit_geometry((480, 640), (240, 240), "letterbox")
    assert geom.content_hw == (180, 240) and geom.top == 30 and geom.left == 0
    rgb = np.full((480, 640, 3), 200, np.uint8)
    x, _ = preprocess(rgb, (240, 240), MEAN, STD, "letterbox")
    np.testing.assert_allclose(x[:, :30], (128 / 255 - 0.5) / 0.5, atol=1e-6)  # mean colour
    np.testing.assert_allclose(x[:, 30:210], (200 / 255 - 0.5) / 0.5, atol=1e-6)


def test_heatmap_maps_back_to_the_source_without_padding():
    geom = fit_geometry((480, 640), (240, 240), "letterbox")
    score = np.full((240, 240), 99.0, np.float32)  # padding rows hold junk
    score[30:210] = np.linspace(0, 1, 240, dtype=np.float32)[None, :]
    heat = heatmap_to_source(score, geom)
    assert heat.shape == (480, 640) and heat.dtype == np.float32
    assert heat.max() <= 1.0 + 1e-6  # no padding junk leaks in
    assert heat[:, 0].mean() < 0.01 and heat[:, -1].mean() > 0.99  # left-to-right ramp kept
    same = fit_geometry((24, 32), (24, 32), "stretch")
    assert heatmap_to_source(score[:24, :32], same).shape == (24, 32)


def test_labels_follow_the_same_geometry_with_nearest_and_void_padding():
    label = np.zeros((480, 640), np.uint8)
    label[200:280, 300:340] = 1
    geom = fit_geometry((480, 640), (240, 240), "letterbox")
    small = label_to_input(label, geom)
    assert set(np.unique(small)) == {0, 1, 255}  # nearest: no blended values
    assert (small[:30] == 255).all() and (small[210:] == 255).all()


def test_threshold_components_min_area_and_stats():
    heat = np.zeros((60, 80), np.float32)
    heat[10:20, 10:30] = 2.0  # 200 px
    heat[15, 15] = 5.0
    heat[40:42, 60:62] = 3.0  # 4 px: below min_area
    heat[50:55, 5:10] = 1.5  # 25 px
    mask, obs = threshold_components(heat, threshold=1.0, min_area=20)
    assert mask.dtype == np.uint8 and set(np.unique(mask)) == {0, 255}
    expected = (heat >= 1.0)
    expected[40:42, 60:62] = False
    np.testing.assert_array_equal(mask == 255, expected)
    assert [o.area for o in obs] == [200, 25]  # sorted by peak, small blob dropped
    big = obs[0]
    assert (big.x, big.y, big.width, big.height) == (10, 10, 20, 10)
    assert big.peak_score == 5.0 and big.mean_score == pytest.approx((199 * 2 + 5) / 200)
    empty_mask, none = threshold_components(np.zeros((5, 5), np.float32), 1.0, 0)
    assert not empty_mask.any() and none == []


def test_preprocess_rejects_non_rgb_arrays():
    with pytest.raises(ValueError, match="HxWx3 uint8"):
        preprocess(np.zeros((10, 10), np.uint8), (8, 8), MEAN, STD, "stretch")
    with pytest.raises(ValueError, match="unknown resize policy"):
        fit_geometry((10, 10), (8, 8), "crop")
