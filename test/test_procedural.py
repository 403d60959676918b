"""Tests for the procedural anomaly source (flowclas_ros.data.outliers.procedural_anomalies): the noise, the blob
masks' exact area, every fill kind, and paste_procedural's label contract (label == 1 exactly on
the changed pixels, each changed by >= min_change levels), determinism and area control."""
from __future__ import annotations

import dataclasses

import cv2
import numpy as np
import pytest

from flowclas_ros.data.outliers.procedural_anomalies import (
    COLOUR_OPS,
    FILL_KINDS,
    GEOMETRY_OPS,
    TEXTURE_KINDS,
    ProceduralConfig,
    blob_mask,
    colour_distortion,
    foreign_texture,
    fractal_noise,
    geometric_distortion,
    gradient_noise,
    paste_procedural,
)
from flowclas_ros.runtime.labels import ANOMALY, VOID
from flowclas_ros.sim.toy import render_inlier_scene


def _scene(seed: int, size=(96, 128)) -> np.ndarray:
    return render_inlier_scene(np.random.default_rng(seed), size)


def _position_image(h: int = 60, w: int = 80) -> np.ndarray:
    """Every pixel unique: R = row, G = column, B = 77 (so a patch's pixels tell where they came from)."""
    img = np.zeros((h, w, 3), np.uint8)
    img[..., 0] = np.arange(h)[:, None]
    img[..., 1] = np.arange(w)[None, :]
    img[..., 2] = 77
    return img


# ------------------------------------------------------------------ noise


def test_gradient_noise_is_smooth_bounded_and_seeded() -> None:
    a = gradient_noise((64, 96), (2, 3), np.random.default_rng(0))
    b = gradient_noise((64, 96), (2, 3), np.random.default_rng(0))
    c = gradient_noise((64, 96), (2, 3), np.random.default_rng(1))
    assert a.dtype == np.float32 and a.shape == (64, 96)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert np.abs(a).max() <= 1.0 + 1e-5 and a.std() > 0.1
    # 2x3 lattice cells over 64x96 px: neighbouring pixels differ by a small fraction of the range
    step = max(np.abs(np.diff(a, axis=0)).max(), np.abs(np.diff(a, axis=1)).max())
    assert step < 0.1 * (a.max() - a.min())


def test_fractal_noise_adds_detail() -> None:
    one = fractal_noise((128, 128), np.random.default_rng(3), (2, 2), octaves=1)
    many = fractal_noise((128, 128), np.random.default_rng(3), (2, 2), octaves=5)

    def roughness(n: np.ndarray) -> float:  # high-frequency energy relative to the spread
        return float(np.abs(np.diff(n, axis=1)).mean() / n.std())

    assert roughness(many) > 1.3 * roughness(one)


@pytest.mark.parametrize("shape,coverage", [((40, 40), 0.5), ((31, 77), 0.3), ((100, 60), 0.7),
                                            ((5, 9), 0.01), ((12, 12), 1.0)])
def test_blob_mask_has_exact_area_and_is_compact(shape, coverage) -> None:
    mask = blob_mask(shape, coverage, np.random.default_rng(4))
    assert mask.dtype == bool and mask.shape == shape
    assert int(mask.sum()) == max(1, round(coverage * shape[0] * shape[1]))
    if 0.1 < coverage < 1.0:
        # one main body: the largest 8-connected component holds most of the blob ...
        n, lab, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
        assert stats[1:, cv2.CC_STAT_AREA].max() >= 0.6 * mask.sum()
        # ... around the box centre (the elliptical fall-off), not stuck in a corner
        ys, xs = np.nonzero(mask)
        assert abs(ys.mean() / shape[0] - 0.5) < 0.2 and abs(xs.mean() / shape[1] - 0.5) < 0.2


def test_blob_mask_rejects_bad_coverage() -> None:
    with pytest.raises(ValueError, match="coverage"):
        blob_mask((10, 10), 0.0, np.random.default_rng(0))


# ------------------------------------------------------------------ fills


@pytest.mark.parametrize("kind", TEXTURE_KINDS)
def test_foreign_texture_kinds(kind: str) -> None:
    tex = foreign_texture((48, 64), np.random.default_rng(5), kind)
    assert tex.dtype == np.uint8 and tex.shape == (48, 64, 3)
    colours = np.unique(tex.reshape(-1, 3), axis=0)
    if kind in ("stripes", "checker"):
        assert len(colours) == 2  # exactly two colours, >= 64 levels apart
        assert np.abs(colours[0].astype(int) - colours[1].astype(int)).max() >= 64
    else:
        assert len(colours) > 10  # continuous ramps
    if kind == "gradient":  # a linear ramp: every row is an affine function of the column (+- rounding)
        row = tex[10].astype(float)
        second = np.abs(np.diff(row, n=2, axis=0)).max()
        assert second <= 2.0


def test_foreign_texture_unknown_kind() -> None:
    with pytest.raises(ValueError, match="texture kind"):
        foreign_texture((8, 8), np.random.default_rng(0), "plaid")


def test_colour_distortion_ops() -> None:
    region = _scene(6)[40:80, 20:100]
    inv = colour_distortion(region, np.random.default_rng(0), "invert")
    np.testing.assert_array_equal(inv, 255 - region)
    hue = colour_distortion(region, np.random.default_rng(0), "hue")
    # hue rotation keeps HSV value (max channel) and moves the hue of saturated pixels
    v0, v1 = region.max(axis=2).astype(int), hue.max(axis=2).astype(int)
    assert np.abs(v0 - v1).max() <= 3
    hsv0 = cv2.cvtColor(region, cv2.COLOR_RGB2HSV_FULL).astype(int)
    hsv1 = cv2.cvtColor(hue, cv2.COLOR_RGB2HSV_FULL).astype(int)
    sat = hsv0[..., 1] > 80
    assert sat.mean() > 0.2
    dh = np.abs(hsv0[..., 0] - hsv1[..., 0])
    dh = np.minimum(dh, 256 - dh)[sat]
    assert np.median(dh) > 256 * 50 / 360  # rotated by >= 60 degrees (minus rounding)
    sv = colour_distortion(region, np.random.default_rng(1), "saturation_value")
    hsv2 = cv2.cvtColor(sv, cv2.COLOR_RGB2HSV_FULL).astype(int)
    # a jump, not a nudge: the mean value or saturation moves by a large factor
    moved = [abs(np.log((hsv2[..., c].mean() + 1) / (hsv0[..., c].mean() + 1))) for c in (1, 2)]
    assert max(moved) > np.log(1.4)
    with pytest.raises(ValueError, match="colour op"):
        colour_distortion(region, np.random.default_rng(0), "sepia")


def _positions(patch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    assert (patch[..., 2] == 77).all()
    return patch[..., 0].astype(int), patch[..., 1].astype(int)


def test_geometric_distortion_mirror_rotate_shuffle() -> None:
    img = _position_image()
    h, w = 24, 24  # divisible by 2, 3 and 4: shuffled tiles tile the patch exactly
    seen_flips = set()
    for seed in range(12):
        rows, cols = _positions(geometric_distortion(img, (h, w), np.random.default_rng(seed), "mirror"))
        lr = (np.diff(cols, axis=1) == -1).all() and (np.diff(rows, axis=0) == 1).all()
        ud = (np.diff(rows, axis=0) == -1).all() and (np.diff(cols, axis=1) == 1).all()
        assert lr or ud
        seen_flips.add("lr" if lr else "ud")
    assert seen_flips == {"lr", "ud"}
    rows, cols = _positions(geometric_distortion(img, (h, w), np.random.default_rng(0), "rotate"))
    # a rotated window: along the output's rows the SOURCE ROW (not the column) changes
    assert (np.abs(np.diff(rows, axis=1)) == 1).all() and (np.diff(cols, axis=1) == 0).all() \
        or (np.abs(np.diff(rows, axis=0)) == 1).all() and (np.abs(np.diff(cols, axis=1)) == 1).all()
    assert not ((np.diff(cols, axis=1) == 1).all() and (np.diff(rows, axis=0) == 1).all())  # not upright
    for seed in range(5):
        out = geometric_distortion(img, (h, w), np.random.default_rng(seed), "shuffle")
        rows, cols = _positions(out)
        # a permutation of one contiguous window: every source position exactly once ...
        r0, c0 = rows.min(), cols.min()
        assert rows.max() - r0 == h - 1 and cols.max() - c0 == w - 1
        assert len({(r, c) for r, c in zip(rows.ravel(), cols.ravel())}) == h * w
        # ... but not in place
        assert not ((rows == r0 + np.arange(h)[:, None]).all() and (cols == c0 + np.arange(w)[None, :]).all())
    # a patch as large as the frame (reflect-padded for the shuffle grid) still works
    full = geometric_distortion(img[:25, :25], (25, 25), np.random.default_rng(1), "shuffle")
    assert full.shape == (25, 25, 3)


# ------------------------------------------------------------------ paste_procedural


def _changed(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a != b).any(axis=2)


@pytest.mark.parametrize("fills", [{"texture": 1.0}, {"colour": 1.0}, {"geometry": 1.0},
                                   {"texture": 1.0, "colour": 1.0, "geometry": 1.0}])
def test_label_is_exactly_the_changed_pixels(fills) -> None:
    """label == 1 iff the pixel changed, and every changed pixel moved by >= min_change levels,
    including low-opacity blends and images where fills are no-ops (hue of grey, uniform sky)."""
    cfg = ProceduralConfig(probability=1.0, count=(1, 3), scale=(0.2, 0.6), opacity=(0.05, 1.0),
                           min_change=24, fills=fills)
    grey = np.full((64, 80, 3), 128, np.uint8)  # hue rotation / mirroring change nothing here
    fallbacks = 0
    for seed in range(12):
        image = grey if seed % 4 == 0 else _scene(seed)
        before = image.copy()
        out, label, pasted = paste_procedural(image, None, cfg, np.random.default_rng(seed))
        np.testing.assert_array_equal(image, before)  # input untouched
        assert pasted and out.dtype == np.uint8 and label.dtype == np.uint8
        changed = _changed(out, image)
        np.testing.assert_array_equal(changed, label == ANOMALY)
        assert set(np.unique(label)) <= {0, ANOMALY} and changed.any()
        delta = np.abs(out.astype(int) - image.astype(int)).max(axis=2)
        assert delta[changed].min() >= 24
        fallbacks += int((delta[changed] == 24).sum())
    assert fallbacks > 0  # the enforcement path was exercised


def test_existing_labels_are_overridden_only_under_the_blobs() -> None:
    image = _scene(7)
    label = np.zeros(image.shape[:2], np.uint8)
    label[:, :64] = VOID  # left half void
    label[50:60, 70:80] = ANOMALY
    cfg = ProceduralConfig(probability=1.0, count=(3, 3), scale=(0.5, 0.8))
    out, new, _ = paste_procedural(image, label, cfg, np.random.default_rng(8))
    blob = _changed(out, image)
    np.testing.assert_array_equal(new[blob], ANOMALY)  # void and inlier pixels under a blob -> 1
    np.testing.assert_array_equal(new[~blob], label[~blob])  # nothing else touched
    assert (label[blob] == VOID).any()  # the case was actually exercised


def test_deterministic_and_probability() -> None:
    image = _scene(9)
    cfg = ProceduralConfig(probability=1.0, count=(1, 3))
    a = paste_procedural(image, None, cfg, np.random.default_rng(10))
    b = paste_procedural(image, None, cfg, np.random.default_rng(10))
    c = paste_procedural(image, None, cfg, np.random.default_rng(11))
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[1], c[1])
    out, label, pasted = paste_procedural(image, None, dataclasses.replace(cfg, probability=0.0),
                                          np.random.default_rng(10))
    assert not pasted and np.array_equal(out, image) and not label.any() and out is not image
    hits = sum(paste_procedural(image, None, dataclasses.replace(cfg, probability=0.3),
                                np.random.default_rng(s))[2] for s in range(200))
    assert 40 <= hits <= 80  # ~ Binomial(200, 0.3)


def test_area_control() -> None:
    """One blob: its box's longest side is scale * shorter image side (the other side 0.5-1x
    that), and it covers exactly `coverage` of its box; the mean area grows with coverage."""
    image = _scene(12, (120, 160))
    short = 120
    for scale, cov in ((0.2, 0.3), (0.5, 0.6)):
        cfg = ProceduralConfig(probability=1.0, count=(1, 1), scale=(scale, scale), coverage=(cov, cov))
        for seed in range(6):
            _, label, _ = paste_procedural(image, None, cfg, np.random.default_rng(seed))
            side = scale * short
            area = int((label == ANOMALY).sum())
            assert cov * (side * 0.5) * side * 0.9 - 2 <= area <= cov * side * side * 1.05 + 2
            ys, xs = np.nonzero(label)
            assert max(np.ptp(ys), np.ptp(xs)) + 1 <= round(side)
    means = []
    for cov in (0.2, 0.4, 0.8):
        cfg = ProceduralConfig(probability=1.0, count=(2, 2), scale=(0.3, 0.3), coverage=(cov, cov))
        means.append(np.mean([(paste_procedural(image, None, cfg, np.random.default_rng(s))[1] == 1).mean()
                              for s in range(6)]))
    assert means[0] < means[1] < means[2]


def test_every_fill_kind_changes_the_frame_its_own_way() -> None:
    image = _scene(13)
    for kind in FILL_KINDS:
        cfg = ProceduralConfig(probability=1.0, count=(1, 1), scale=(0.5, 0.5), opacity=(1.0, 1.0),
                               fills={kind: 1.0})
        out, label, _ = paste_procedural(image, None, cfg, np.random.default_rng(14))
        blob = label == ANOMALY
        colours_in = len(np.unique(image[blob], axis=0))
        colours_out = len(np.unique(out[blob], axis=0))
        assert blob.sum() > 200, kind
        if kind == "colour":
            # a strong distortion of the pixels in place (opacity 1)
            diff = out[blob].astype(int) - image[blob].astype(int)
            assert np.abs(diff).mean() > 20
        elif kind == "texture":
            assert colours_out != colours_in
        else:  # geometry: the blob's pixels come from elsewhere in the same frame
            src = {tuple(p) for p in image.reshape(-1, 3)}
            from_image = np.mean([tuple(p) in src for p in out[blob]])
            assert from_image > 0.5
    assert set(COLOUR_OPS) and set(GEOMETRY_OPS)


def test_rejects_bad_frames() -> None:
    cfg = ProceduralConfig(probability=1.0)
    with pytest.raises(ValueError, match="uint8"):
        paste_procedural(np.zeros((8, 8, 3), np.float32), None, cfg, np.random.default_rng(0))
    with pytest.raises(ValueError, match="label shape"):
        paste_procedural(np.zeros((8, 8, 3), np.uint8), np.zeros((4, 4), np.uint8), cfg,
                         np.random.default_rng(0))


# ------------------------------------------------------------------ config


@pytest.mark.parametrize("kwargs,field", [
    ({"probability": 1.5}, "probability"),
    ({"count": (0, 2)}, "count"),
    ({"count": (1.0, 2)}, "count"),
    ({"scale": (0.5, 0.2)}, "scale"),
    ({"coverage": (0.0, 0.5)}, "coverage"),
    ({"opacity": (0.5, 1.5)}, "opacity"),
    ({"min_change": 0}, "min_change"),
    ({"min_change": 200}, "min_change"),
    ({"octaves": 0}, "octaves"),
    ({"frequency": (3, 2)}, "frequency"),
    ({"fills": {"plasma": 1.0}}, "fills"),
    ({"fills": {"texture": 0.0}}, "fills"),
    ({"fills": {"texture": -1.0, "colour": 2.0}}, "fills"),
    ({"scale": 0.3}, "scale"),
])
def test_config_validation_names_the_field(kwargs, field) -> None:
    with pytest.raises(ValueError, match=f"ProceduralConfig.{field}"):
        ProceduralConfig(**kwargs)


def test_config_normalises_yaml_lists_and_is_hashable() -> None:
    cfg = ProceduralConfig(count=[1, 3], scale=[0.1, 0.3], fills={"colour": 2, "geometry": 2})
    assert cfg.count == (1, 3) and cfg.scale == (0.1, 0.3)
    assert cfg.fills == (("texture", 0.0), ("colour", 2.0), ("geometry", 2.0))
    np.testing.assert_allclose(cfg.fill_probabilities, [0.0, 0.5, 0.5])
    assert hash(cfg) == hash(ProceduralConfig(count=(1, 3), scale=(0.1, 0.3),
                                              fills=(("colour", 2.0), ("geometry", 2.0))))
