"""Tests for dataset layouts, outlier-exposure pasting and the procedural toy world."""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import pytest

from flowclas_ros.data.files import DatasetError, read_image_rgb
from flowclas_ros.data.generic import generic_layout, write_sample
from flowclas_ros.data.labels import Sample, read_label
from flowclas_ros.data.layouts import LAYOUTS, load_layout
from flowclas_ros.data.outliers.cutouts import (
    Cutout,
    CutoutBank,
    PasteConfig,
    load_cutout,
    paste_cutout,
    paste_outliers,
    resize_cutout,
    save_cutout,
)
from flowclas_ros.runtime.labels import ANOMALY, VOID
from flowclas_ros.sim.toy import make_cutout, make_toy_cutout_bank, make_toy_dataset, render_inlier_scene


def anomaly_fraction(label: np.ndarray) -> float:
    """Fraction of non-void pixels labelled anomalous (0.0 when everything is void)."""
    valid = label != VOID
    n_valid = int(np.count_nonzero(valid))
    return float(np.count_nonzero(label[valid] == ANOMALY)) / n_valid if n_valid else 0.0


def _image(seed: int = 0, shape: tuple[int, int] = (24, 32)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (*shape, 3), dtype=np.uint8)


def _solid_cutout(shape: tuple[int, int], colour: tuple[int, int, int], mask: np.ndarray | None = None) -> Cutout:
    """A cut-out whose rgb is one colour everywhere, so resizing cannot blend in other colours."""
    rgb = np.empty((*shape, 3), np.uint8)
    rgb[:] = colour
    return Cutout(rgb, np.ones(shape, bool) if mask is None else mask)


# ---------------------------------------------------------------- layouts


def test_generic_layout_lists_sorted_samples_with_optional_labels(tmp_path: Path) -> None:
    label = np.zeros((24, 32), np.uint8)
    write_sample(tmp_path, "b", _image(1), label)
    write_sample(tmp_path, "a", _image(2), label)
    cv2.imwrite(str(tmp_path / "images" / "c.jpg"), _image(3))
    (tmp_path / "images" / "notes.txt").write_text("not an image")

    samples = generic_layout(tmp_path)

    assert [s.id for s in samples] == ["a", "b", "c"]
    assert samples[0] == Sample("a", tmp_path / "images" / "a.png", tmp_path / "labels" / "a.png")
    assert samples[2].image_path.name == "c.jpg"
    assert samples[2].label_path is None
    assert load_layout("generic", tmp_path) == samples


def test_generic_layout_missing_root_names_path(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(DatasetError, match="nowhere.*does not exist"):
        generic_layout(missing)


def test_generic_layout_missing_images_dir_and_no_images(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="images"):
        generic_layout(tmp_path)
    (tmp_path / "images").mkdir()
    with pytest.raises(DatasetError, match="no images"):
        generic_layout(tmp_path)


def test_generic_layout_require_labels_names_image_id(tmp_path: Path) -> None:
    write_sample(tmp_path, "frame_007", _image(), None)
    assert generic_layout(tmp_path)[0].label_path is None
    with pytest.raises(DatasetError, match="frame_007"):
        generic_layout(tmp_path, require_labels=True)


def test_generic_layout_rejects_ambiguous_ids(tmp_path: Path) -> None:
    write_sample(tmp_path, "x", _image(), None)
    cv2.imwrite(str(tmp_path / "images" / "x.jpg"), _image())
    with pytest.raises(DatasetError, match="'x'"):
        generic_layout(tmp_path)


def test_load_layout_unknown_name_lists_known(tmp_path: Path) -> None:
    assert "generic" in LAYOUTS
    with pytest.raises(DatasetError, match="generic"):
        load_layout("cityscapes-ish", tmp_path)


def test_write_then_read_round_trip_is_exact_and_rgb(tmp_path: Path) -> None:
    image = _image(5)
    image[0, 0] = (255, 0, 0)  # pure red, to catch an RGB/BGR swap
    label = np.random.default_rng(5).choice(np.array([0, 1, 255], np.uint8), size=(24, 32))
    write_sample(tmp_path, "s", image, label)

    assert np.array_equal(read_image_rgb(tmp_path / "images" / "s.png"), image)
    assert np.array_equal(read_label(tmp_path / "labels" / "s.png", expected_shape=(24, 32)), label)
    assert tuple(cv2.imread(str(tmp_path / "images" / "s.png"))[0, 0]) == (0, 0, 255)  # BGR on disk


def test_read_image_rgb_normalises_grey_and_rgba(tmp_path: Path) -> None:
    grey = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    cv2.imwrite(str(tmp_path / "grey.png"), grey)
    rgb = read_image_rgb(tmp_path / "grey.png")
    assert rgb.shape == (3, 4, 3) and rgb.dtype == np.uint8
    assert all(np.array_equal(rgb[..., c], grey) for c in range(3))

    bgra = np.zeros((3, 4, 4), np.uint8)
    bgra[..., 0], bgra[..., 3] = 200, 7  # blue in cv2 order, nearly transparent
    cv2.imwrite(str(tmp_path / "rgba.png"), bgra)
    rgb = read_image_rgb(tmp_path / "rgba.png")
    assert rgb.shape == (3, 4, 3)
    assert (rgb[..., 2] == 200).all() and (rgb[..., :2] == 0).all()


def test_read_image_rgb_unreadable_names_file(tmp_path: Path) -> None:
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"definitely not a png")
    with pytest.raises(DatasetError, match="broken.png"):
        read_image_rgb(broken)
    with pytest.raises(DatasetError, match="absent.png"):
        read_image_rgb(tmp_path / "absent.png")


def test_read_label_bad_values_names_file_and_values(tmp_path: Path) -> None:
    label = np.zeros((4, 4), np.uint8)
    label[0, 0], label[1, 1] = 2, 77
    cv2.imwrite(str(tmp_path / "bad_label.png"), label)
    with pytest.raises(DatasetError, match=r"bad_label\.png.*2, 77"):
        read_label(tmp_path / "bad_label.png")


def test_read_label_rejects_shape_mismatch_and_colour(tmp_path: Path) -> None:
    cv2.imwrite(str(tmp_path / "l.png"), np.zeros((4, 5), np.uint8))
    assert read_label(tmp_path / "l.png", expected_shape=(4, 5)).shape == (4, 5)
    with pytest.raises(DatasetError, match="shape 4x5"):
        read_label(tmp_path / "l.png", expected_shape=(5, 4))
    cv2.imwrite(str(tmp_path / "rgb_label.png"), np.zeros((4, 5, 3), np.uint8))
    with pytest.raises(DatasetError, match="single-channel"):
        read_label(tmp_path / "rgb_label.png")


def test_write_sample_rejects_invalid_data(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="outside"):
        write_sample(tmp_path, "s", _image(), np.full((24, 32), 3, np.uint8))
    with pytest.raises(DatasetError, match="shape"):
        write_sample(tmp_path, "s", _image(), np.zeros((10, 10), np.uint8))
    with pytest.raises(DatasetError, match="sample id"):
        write_sample(tmp_path, "../escape", _image(), None)
    assert not (tmp_path / "images").exists()


# ---------------------------------------------------------------- cut-outs


def test_cutout_save_load_round_trip(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    mask = rng.random((9, 13)) < 0.6
    mask[0, 0] = mask[-1, -1] = True  # the mask spans the whole patch, so nothing gets trimmed
    rgb = rng.integers(0, 256, (9, 13, 3), dtype=np.uint8)
    save_cutout(tmp_path / "c.png", Cutout(rgb, mask))

    alpha = cv2.imread(str(tmp_path / "c.png"), cv2.IMREAD_UNCHANGED)[..., 3]
    assert set(np.unique(alpha)) == {0, 255} and np.array_equal(alpha == 255, mask)
    loaded = load_cutout(tmp_path / "c.png")
    assert np.array_equal(loaded.mask, mask)
    assert np.array_equal(loaded.rgb[mask], rgb[mask])


def test_load_cutout_trims_transparent_border(tmp_path: Path) -> None:
    mask = np.zeros((20, 20), bool)
    mask[5:9, 3:15] = True
    save_cutout(tmp_path / "c.png", _solid_cutout((20, 20), (1, 2, 3), mask))
    assert load_cutout(tmp_path / "c.png").mask.shape == (4, 12)


def test_load_cutout_errors_name_file(tmp_path: Path) -> None:
    cv2.imwrite(str(tmp_path / "opaque.png"), np.zeros((5, 5, 3), np.uint8))
    with pytest.raises(ValueError, match=r"opaque\.png.*alpha"):
        load_cutout(tmp_path / "opaque.png")
    save_cutout(tmp_path / "empty.png", _solid_cutout((5, 5), (9, 9, 9), np.zeros((5, 5), bool)))
    with pytest.raises(ValueError, match=r"empty\.png.*empty mask"):
        load_cutout(tmp_path / "empty.png")


def test_cutout_bank_from_dir_and_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="missing_dir"):
        CutoutBank.from_dir(tmp_path / "missing_dir")
    (tmp_path / "bank").mkdir()
    with pytest.raises(ValueError, match="bank.*no \\*.png"):
        CutoutBank.from_dir(tmp_path / "bank")
    for name, side in (("b.png", 6), ("a.png", 4)):
        save_cutout(tmp_path / "bank" / name, _solid_cutout((side, side), (0, 0, 0)))

    bank = CutoutBank.from_dir(tmp_path / "bank")

    assert len(bank) == 2
    assert bank[0].mask.shape == (4, 4)  # sorted by file name
    picks_a = [bank.sample(np.random.default_rng(3)).mask.shape for _ in range(2)]
    picks_b = [bank.sample(np.random.default_rng(3)).mask.shape for _ in range(2)]
    assert picks_a == picks_b
    with pytest.raises(ValueError):
        CutoutBank([])


def test_resize_cutout_scales_longest_side_and_shrinks_to_fit() -> None:
    cutout = _solid_cutout((10, 40), (5, 5, 5))
    assert resize_cutout(cutout, 20, (100, 100)).mask.shape == (5, 20)
    fitted = resize_cutout(cutout, 200, (50, 30))
    assert fitted.mask.shape == (8, 30)
    thin = _solid_cutout((1, 40), (5, 5, 5))
    assert resize_cutout(thin, 4, (10, 10)).mask.any()  # nearest sampling must not lose it


def test_paste_cutout_in_place_and_bounds() -> None:
    image = np.zeros((10, 10, 3), np.uint8)
    label = np.full((10, 10), 255, np.uint8)
    mask = np.array([[True, False], [True, True]])
    paste_cutout(image, label, _solid_cutout((2, 2), (9, 8, 7), mask), (3, 4))
    assert np.array_equal(np.argwhere(label == 1), [[3, 4], [4, 4], [4, 5]])
    assert (image[label == 1] == (9, 8, 7)).all() and (image[label == 255] == 0).all()
    with pytest.raises(ValueError, match="does not fit"):
        paste_cutout(image, label, _solid_cutout((2, 2), (1, 1, 1)), (9, 0))


# ---------------------------------------------------------------- paste_outliers


COLOUR = (250, 0, 250)  # absent from the base image below


def _bank() -> CutoutBank:
    disc = np.zeros((15, 15), np.uint8)
    cv2.circle(disc, (7, 7), 7, 1, -1)
    return CutoutBank([_solid_cutout((15, 15), COLOUR, disc > 0), _solid_cutout((6, 20), COLOUR)])


def _base_frame() -> tuple[np.ndarray, np.ndarray]:
    image = np.full((60, 80, 3), 100, np.uint8)
    label = np.zeros((60, 80), np.uint8)
    label[:10] = 255
    return image, label


def test_paste_labels_exactly_the_changed_pixels() -> None:
    image, label = _base_frame()
    cfg = PasteConfig(probability=1.0, count=(2, 3), scale=(0.2, 0.5))
    for seed in range(10):
        out_image, out_label, pasted = paste_outliers(image, label, _bank(), cfg, np.random.default_rng(seed))
        changed = (out_image != image).any(axis=2)
        assert pasted
        assert np.array_equal(changed, out_label == 1)
        assert (out_image[changed] == COLOUR).all()
        assert np.array_equal(out_label[~changed], label[~changed])  # 0 and 255 kept elsewhere
        assert anomaly_fraction(out_label) > 0


def test_paste_probability_zero_leaves_frame_unchanged() -> None:
    image, label = _base_frame()
    out_image, out_label, pasted = paste_outliers(image, label, _bank(), PasteConfig(probability=0.0),
                                                  np.random.default_rng(0))
    assert not pasted
    assert np.array_equal(out_image, image) and np.array_equal(out_label, label)
    assert out_image is not image and out_label is not label


def test_paste_does_not_modify_inputs_and_handles_missing_label() -> None:
    image, label = _base_frame()
    image_before, label_before = image.copy(), label.copy()
    cfg = PasteConfig(probability=1.0)
    paste_outliers(image, label, _bank(), cfg, np.random.default_rng(1))
    assert np.array_equal(image, image_before) and np.array_equal(label, label_before)

    _, out_label, _ = paste_outliers(image, None, _bank(), cfg, np.random.default_rng(1))
    assert set(np.unique(out_label)) == {0, 1}


def test_paste_scale_is_relative_to_the_shorter_side() -> None:
    image = np.zeros((100, 200, 3), np.uint8)
    cfg = PasteConfig(probability=1.0, count=(1, 1), scale=(0.5, 0.5), rotate=False)
    bank = CutoutBank([_solid_cutout((10, 10), COLOUR)])
    _, out_label, _ = paste_outliers(image, None, bank, cfg, np.random.default_rng(0))
    rows, cols = np.nonzero(out_label)
    assert (np.ptp(rows) + 1, np.ptp(cols) + 1) == (50, 50)
    assert out_label.sum() == 50 * 50


def test_paste_is_deterministic_given_seed() -> None:
    image, label = _base_frame()
    cfg = PasteConfig(probability=0.7, count=(1, 3))
    runs = [paste_outliers(image, label, _bank(), cfg, np.random.default_rng(42)) for _ in range(2)]
    assert np.array_equal(runs[0][0], runs[1][0]) and np.array_equal(runs[0][1], runs[1][1])
    assert runs[0][2] == runs[1][2]
    others = [paste_outliers(image, label, _bank(), cfg, np.random.default_rng(s))[1] for s in range(5)]
    assert any(not np.array_equal(o, runs[0][1]) for o in others)


def test_paste_probability_is_respected_statistically() -> None:
    image, label = _base_frame()
    rng = np.random.default_rng(7)
    flags = [paste_outliers(image, label, _bank(), PasteConfig(probability=0.3), rng)[2] for _ in range(400)]
    assert 0.2 < np.mean(flags) < 0.4


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"probability": -0.1}, "probability"),
        ({"probability": 1.5}, "probability"),
        ({"probability": math.nan}, "probability"),
        ({"count": (0, 2)}, "count"),
        ({"count": (3, 2)}, "count"),
        ({"count": (1.5, 2)}, "count"),
        ({"count": (1,)}, "count"),
        ({"scale": (0.0, 0.2)}, "scale"),
        ({"scale": (0.3, 0.2)}, "scale"),
        ({"scale": (0.1, 1.5)}, "scale"),
        ({"rotate": "yes"}, "rotate"),
    ],
)
def test_paste_config_validation_names_field(kwargs: dict, field: str) -> None:
    with pytest.raises(ValueError, match=f"PasteConfig.{field}"):
        PasteConfig(**kwargs)


def test_paste_config_normalises_lists() -> None:
    cfg = PasteConfig(count=[1, 3], scale=[0.2, 0.3])
    assert cfg.count == (1, 3) and cfg.scale == (0.2, 0.3)
    hash(cfg)


def test_anomaly_fraction_ignores_void() -> None:
    label = np.array([[0, 1, 255, 255]], np.uint8)
    assert anomaly_fraction(label) == 0.5
    assert anomaly_fraction(np.full((2, 2), 255, np.uint8)) == 0.0


# ---------------------------------------------------------------- toy world


def _read_all(root: Path) -> list[tuple[np.ndarray, np.ndarray]]:
    samples = generic_layout(root, require_labels=True)
    return [(read_image_rgb(s.image_path), read_label(s.label_path, (120, 160))) for s in samples]


def test_toy_train_split_is_inlier_only(tmp_path: Path) -> None:
    ids = make_toy_dataset(tmp_path, "train", 6, seed=1)
    assert ids == [f"train_{i:05d}" for i in range(6)]
    frames = _read_all(tmp_path)
    assert len(frames) == 6
    for image, label in frames:
        assert image.shape == (120, 160, 3)
        assert not label.any()


def test_toy_test_split_has_ground_anomalies(tmp_path: Path) -> None:
    make_toy_dataset(tmp_path, "test", 24, seed=3)
    for image, label in _read_all(tmp_path):
        assert 0.002 <= anomaly_fraction(label) <= 0.30
        rows = np.nonzero(label == 1)[0]
        assert rows.min() >= int(0.35 * 120)  # the horizon is never above 35 % of the height
        assert set(np.unique(label)) == {0, 1}


def test_toy_dataset_is_reproducible_and_splits_differ(tmp_path: Path) -> None:
    for name, split, seed in (("a", "val", 0), ("b", "val", 0), ("c", "test", 0), ("d", "val", 1)):
        make_toy_dataset(tmp_path / name, split, 3, seed=seed)

    def image_bytes(name: str, split: str) -> list[bytes]:
        return [(tmp_path / name / "images" / f"{split}_{i:05d}.png").read_bytes() for i in range(3)]

    assert image_bytes("a", "val") == image_bytes("b", "val")
    for other, split in (("c", "test"), ("d", "val")):
        assert all(x != y for x, y in zip(image_bytes("a", "val"), image_bytes(other, split)))


def test_toy_frames_within_split_differ(tmp_path: Path) -> None:
    make_toy_dataset(tmp_path, "train", 3)
    images = [image for image, _ in _read_all(tmp_path)]
    assert not np.array_equal(images[0], images[1]) and not np.array_equal(images[1], images[2])


def test_render_inlier_scene_has_sky_above_ground() -> None:
    for seed in range(10):
        image = render_inlier_scene(np.random.default_rng(seed), size=(96, 128))
        assert image.shape == (96, 128, 3) and image.dtype == np.uint8
        sky, ground = image[:30].astype(float), image[-30:].astype(float)
        assert sky[..., 2].mean() > sky[..., 0].mean()  # blue/grey, never brown
        assert sky.mean() > ground.mean()
        assert ground.std() > 3  # textured, not flat
    with pytest.raises(ValueError):
        render_inlier_scene(np.random.default_rng(0), size=(8, 8))


def _distinct_colours(cutout: Cutout) -> int:
    return len(np.unique(cutout.rgb[cutout.mask], axis=0))


def test_cutout_families_are_disjoint_in_appearance() -> None:
    rng = np.random.default_rng(0)
    oe = [make_cutout(rng, "oe") for _ in range(20)]
    test = [make_cutout(rng, "test") for _ in range(20)]
    for cutout in oe + test:
        assert 16 <= max(cutout.mask.shape) <= 48
        assert cutout.mask.any()
    assert all(_distinct_colours(c) > 20 for c in oe)  # one hue + noise texture
    assert all(_distinct_colours(c) == 2 for c in test)  # flat two-colour stripes / checkers
    with pytest.raises(ValueError, match="family"):
        make_cutout(rng, "coco")


def test_toy_cutout_bank_feeds_outlier_exposure(tmp_path: Path) -> None:
    paths = make_toy_cutout_bank(tmp_path / "bank", 5, seed=2)
    assert [p.name for p in paths] == [f"oe_{i:05d}.png" for i in range(5)]
    assert [p.read_bytes() for p in paths] == [p.read_bytes() for p in make_toy_cutout_bank(tmp_path / "b2", 5, 2)]
    bank = CutoutBank.from_dir(tmp_path / "bank")
    assert len(bank) == 5
    image = render_inlier_scene(np.random.default_rng(0))
    out_image, out_label, pasted = paste_outliers(image, None, bank, PasteConfig(probability=1.0),
                                                  np.random.default_rng(0))
    assert pasted and anomaly_fraction(out_label) > 0
    assert (out_image != image).any(axis=2)[out_label == 0].sum() == 0
