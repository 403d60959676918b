"""Tests for the benchmark dataset readers, their label decoding and the COCO cut-out source.

Every fixture is a tiny tree in tmp_path with the datasets' real file naming and real label value
coding; labels are read back only through `read_sample_label`, the one label reader for samples.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from flowclas_ros.data.files import DatasetError, read_image_rgb
from flowclas_ros.data.labels import INLIER_CODING, LABEL_DECODERS, Sample, read_label, read_sample_label
from flowclas_ros.data.layouts import LAYOUTS, load_layout
from flowclas_ros.data.outliers.coco_cutouts import (
    EXCLUDED_CLASSES,
    coco_cutouts,
    decode_rle,
    decode_rle_string,
    polygons_to_mask,
)
from flowclas_ros.data.outliers.cutouts import CutoutBank

SHAPE = (12, 16)


def _rgb(seed: int, shape: tuple[int, int] = SHAPE) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (*shape, 3), dtype=np.uint8)


def _write(path: Path, array: np.ndarray) -> Path:
    """cv2-write (format from the suffix), creating parent directories."""
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), array), path
    return path


def _raw_label(seed: int, values: list[int], shape: tuple[int, int] = SHAPE) -> np.ndarray:
    """A label with every one of `values` present (first pixels), the rest random among them."""
    label = np.random.default_rng(seed).choice(np.array(values, np.uint8), size=shape)
    label.flat[: len(values)] = values
    return label


def _decode_as(raw: np.ndarray, mapping: dict[int, int]) -> np.ndarray:
    out = np.full(raw.shape, 77, np.uint8)
    for raw_value, value in mapping.items():
        out[raw == raw_value] = value
    assert (out != 77).all()
    return out


def _by_id(samples: list[Sample]) -> dict[str, Sample]:
    ids = [s.id for s in samples]
    assert ids == sorted(set(ids)), "ids must be unique and sorted"
    return {s.id: s for s in samples}


# ---------------------------------------------------------------- Sample / label API


def test_registry_lists_every_layout() -> None:
    assert {"generic", "smiyc_anomaly", "smiyc_obstacle", "fishyscapes_laf", "fishyscapes_static",
            "cityscapes", "mvtec"} <= set(LAYOUTS)
    assert {"generic", "smiyc", "fishyscapes_laf", "fishyscapes_static", "cityscapes_trainids",
            "mvtec_mask"} <= set(LABEL_DECODERS)


def test_sample_stays_backward_compatible_and_validates_coding(tmp_path: Path) -> None:
    label = _write(tmp_path / "l.png", np.array([[0, 1], [255, 0]], np.uint8))
    sample = Sample("a", tmp_path / "a.png", label)
    assert sample.label_coding == "generic" and sample.has_label
    assert sample == Sample("a", tmp_path / "a.png", label, "generic")
    assert np.array_equal(read_sample_label(sample), read_label(label))
    assert np.array_equal(read_label(label, coding="generic"), [[0, 1], [255, 0]])
    assert not Sample("b", tmp_path / "b.png", None).has_label
    assert read_sample_label(Sample("b", tmp_path / "b.png", None)) is None
    with pytest.raises(DatasetError, match="unknown label coding 'nope'.*cityscapes_trainids"):
        Sample("c", tmp_path / "c.png", label, "nope")
    with pytest.raises(DatasetError, match="'inlier' has no label file"):
        Sample("d", tmp_path / "d.png", label, INLIER_CODING)
    with pytest.raises(DatasetError, match="unknown label coding 'nope'"):
        read_label(label, coding="nope")
    with pytest.raises(DatasetError, match="read_sample_label"):
        read_label(label, coding=INLIER_CODING)


def test_read_sample_label_checks_shape_and_inlier_coding_uses_image_size(tmp_path: Path) -> None:
    label = _write(tmp_path / "l.png", np.zeros((4, 5), np.uint8))
    with pytest.raises(DatasetError, match=r"l\.png has shape 4x5, expected 5x4"):
        read_sample_label(Sample("a", tmp_path / "a.png", label, "smiyc"), expected_shape=(5, 4))
    image = _write(tmp_path / "good.png", _rgb(0, (7, 9)))
    good = Sample("good", image, None, INLIER_CODING)
    assert good.has_label
    from_image = read_sample_label(good)
    assert from_image.shape == (7, 9) and from_image.dtype == np.uint8 and not from_image.any()
    assert read_sample_label(good, expected_shape=(3, 2)).shape == (3, 2)


# ---------------------------------------------------------------- SMIYC


@pytest.mark.parametrize(
    ("layout", "track", "extensions"),
    [("smiyc_anomaly", "dataset_AnomalyTrack", (".jpg", ".png", ".webp")),
     ("smiyc_obstacle", "dataset_ObstacleTrack", (".webp", ".jpg", ".png"))],
)
def test_smiyc_pairs_images_with_semantic_masks(tmp_path: Path, layout: str, track: str, extensions) -> None:
    track_dir = tmp_path / track
    ids = ["validation0000", "validation0001", "test0007"]
    for i, (sample_id, ext) in enumerate(zip(ids, extensions)):
        _write(track_dir / "images" / f"{sample_id}{ext}", _rgb(i))
    raws = {sample_id: _raw_label(i, [0, 1, 255]) for i, sample_id in enumerate(ids[:2])}
    for sample_id, raw in raws.items():
        _write(track_dir / "labels_masks" / f"{sample_id}_labels_semantic.png", raw)
        _write(track_dir / "labels_masks" / f"{sample_id}_labels_semantic_color.png", _rgb(9))  # ignored

    samples = _by_id(load_layout(layout, tmp_path))

    assert list(samples) == ["test0007", "validation0000", "validation0001"]
    for sample_id, ext in zip(ids, extensions):
        assert samples[sample_id].image_path == track_dir / "images" / f"{sample_id}{ext}"
    for sample_id, raw in raws.items():
        sample = samples[sample_id]
        assert sample.label_path == track_dir / "labels_masks" / f"{sample_id}_labels_semantic.png"
        assert sample.label_coding == "smiyc"
        rgb = read_image_rgb(sample.image_path)
        assert np.array_equal(read_sample_label(sample, rgb.shape[:2]), raw)  # already 0/1/255
    assert samples["test0007"].label_path is None and read_sample_label(samples["test0007"]) is None
    assert load_layout(layout, track_dir) == list(samples.values())  # root may be the track dir itself
    with pytest.raises(DatasetError, match="'test0007' has no label.*test0007_labels_semantic.png"):
        load_layout(layout, tmp_path, require_labels=True)


def test_smiyc_errors_name_the_path(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"dataset_ObstacleTrack[/\\]images does not exist"):
        load_layout("smiyc_obstacle", tmp_path)
    with pytest.raises(DatasetError, match="nowhere does not exist"):
        load_layout("smiyc_anomaly", tmp_path / "nowhere")
    images = tmp_path / "dataset_AnomalyTrack" / "images"
    images.mkdir(parents=True)
    with pytest.raises(DatasetError, match="no images"):
        load_layout("smiyc_anomaly", tmp_path)
    _write(images / "a.jpg", _rgb(0))
    masks = tmp_path / "dataset_AnomalyTrack" / "labels_masks"
    _write(masks / "b_labels_semantic.png", np.zeros(SHAPE, np.uint8))
    with pytest.raises(DatasetError, match=r"b_labels_semantic\.png has no image \(id 'b'\)"):
        load_layout("smiyc_anomaly", tmp_path)
    (masks / "b_labels_semantic.png").unlink()
    bad = np.zeros(SHAPE, np.uint8)
    bad[0, :2] = (2, 200)
    _write(masks / "a_labels_semantic.png", bad)
    (sample,) = load_layout("smiyc_anomaly", tmp_path)
    with pytest.raises(DatasetError, match=r"a_labels_semantic\.png has values .*smiyc.*: 2, 200"):
        read_sample_label(sample)


# ---------------------------------------------------------------- Fishyscapes


def _laf_tree(root: Path) -> dict[str, np.ndarray]:
    """Two FishyLAF labels whose images sit in different LostAndFound splits/scenes, plus unlabelled frames."""
    frames = {
        "04_Maurener_Weg_8_000000_000030": ("test", "04_Maurener_Weg_8"),
        "01_Hanns_Klemm_Str_45_000002_000190": ("train", "01_Hanns_Klemm_Str_45"),
    }
    raws = {}
    for i, (sample_id, (split, scene)) in enumerate(frames.items()):
        _write(root / "leftImg8bit" / split / scene / f"{sample_id}_leftImg8bit.png", _rgb(i))
        raws[sample_id] = _raw_label(i, [0, 1, 255])
        _write(root / "dataset_FishyLAF" / "labels" / "val" / f"{sample_id}_fishy-labels.png", raws[sample_id])
    _write(root / "leftImg8bit" / "test" / "04_Maurener_Weg_8" / "04_Maurener_Weg_8_000000_000040_leftImg8bit.png",
           _rgb(5))  # LostAndFound frame without a Fishyscapes label: not a sample
    return raws


def test_fishyscapes_laf_finds_images_across_scenes(tmp_path: Path) -> None:
    raws = _laf_tree(tmp_path)
    samples = _by_id(load_layout("fishyscapes_laf", tmp_path))
    assert sorted(samples) == sorted(raws)
    for sample_id, raw in raws.items():
        sample = samples[sample_id]
        assert sample.image_path.name == f"{sample_id}_leftImg8bit.png"
        assert sample.image_path.parent.name == sample_id[: -len("_000000_000030")]  # its scene
        assert sample.label_path == tmp_path / "dataset_FishyLAF" / "labels" / "val" / f"{sample_id}_fishy-labels.png"
        assert np.array_equal(read_sample_label(sample, read_image_rgb(sample.image_path).shape[:2]), raw)
    # LostAndFound may live elsewhere
    other = tmp_path / "laf"
    other.mkdir()
    (tmp_path / "leftImg8bit").rename(other / "leftImg8bit")
    relocated = load_layout("fishyscapes_laf", tmp_path, laf_root=other)
    assert [s.image_path.parent.parent.parent.parent for s in relocated] == [other, other]


def test_fishyscapes_laf_label_without_image_names_id(tmp_path: Path) -> None:
    _laf_tree(tmp_path)
    with pytest.raises(DatasetError, match=r"'01_Hanns_Klemm_Str_45_000002_000190'\) has no image.*leftImg8bit[/\\]test[/\\]"):
        load_layout("fishyscapes_laf", tmp_path, split="test")  # that frame is in LostAndFound's train split
    orphan = "99_Nowhere_000000_000001"
    _write(tmp_path / "dataset_FishyLAF" / "labels" / "val" / f"{orphan}_fishy-labels.png", np.zeros(SHAPE, np.uint8))
    with pytest.raises(DatasetError, match=f"{orphan}.*has no image.*{orphan}_leftImg8bit.png"):
        load_layout("fishyscapes_laf", tmp_path)


def test_fishyscapes_laf_missing_dirs_and_duplicate_images(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"dataset_FishyLAF[/\\]labels[/\\]val does not exist"):
        load_layout("fishyscapes_laf", tmp_path)
    (tmp_path / "dataset_FishyLAF" / "labels" / "val").mkdir(parents=True)
    with pytest.raises(DatasetError, match="no \\*_fishy-labels.png"):
        load_layout("fishyscapes_laf", tmp_path)
    raws = _laf_tree(tmp_path)
    sample_id = next(iter(raws))
    _write(tmp_path / "leftImg8bit" / "val" / "x" / f"{sample_id}_leftImg8bit.png", _rgb(3))
    with pytest.raises(DatasetError, match=f"'{sample_id}' has several files"):
        load_layout("fishyscapes_laf", tmp_path)


def test_fishyscapes_static_maps_void_2_to_255(tmp_path: Path) -> None:
    raws = {}
    for i, sample_id in enumerate(["0000", "0001"]):
        _write(tmp_path / "original" / f"{sample_id}.png", _rgb(i))
        raws[sample_id] = _raw_label(i, [0, 1, 2])
        _write(tmp_path / "labels" / f"{sample_id}.png", raws[sample_id])
    samples = _by_id(load_layout("fishyscapes_static", tmp_path))
    assert list(samples) == ["0000", "0001"]
    for sample_id, raw in raws.items():
        sample = samples[sample_id]
        assert (sample.image_path, sample.label_path) == (tmp_path / "original" / f"{sample_id}.png",
                                                          tmp_path / "labels" / f"{sample_id}.png")
        label = read_sample_label(sample, SHAPE)
        assert np.array_equal(label, _decode_as(raw, {0: 0, 1: 1, 2: 255}))
        assert set(np.unique(label)) == {0, 1, 255}
    _write(tmp_path / "labels" / "0000.png", np.full(SHAPE, 255, np.uint8))  # 255 is not a Static raw id
    with pytest.raises(DatasetError, match=r"0000\.png has values .*fishyscapes_static.*: 255"):
        read_sample_label(samples["0000"])
    with pytest.raises(DatasetError, match=r"original does not exist"):
        load_layout("fishyscapes_static", tmp_path / "labels")


# ---------------------------------------------------------------- Cityscapes


def _cityscapes_tree(root: Path) -> dict[str, np.ndarray]:
    raws = {}
    for i, (split, city, frame) in enumerate([("train", "aachen", "aachen_000000_000019"),
                                              ("train", "bochum", "bochum_000000_000313"),
                                              ("val", "lindau", "lindau_000000_000019")]):
        _write(root / "leftImg8bit" / split / city / f"{frame}_leftImg8bit.png", _rgb(i))
        raws[frame] = _raw_label(i, [*range(19), 255])
        _write(root / "gtFine" / split / city / f"{frame}_gtFine_labelTrainIds.png", raws[frame])
        _write(root / "gtFine" / split / city / f"{frame}_gtFine_labelIds.png", np.zeros(SHAPE, np.uint8))
    return raws


def test_cityscapes_every_class_is_inlier_only_255_is_void(tmp_path: Path) -> None:
    raws = _cityscapes_tree(tmp_path)
    train = _by_id(load_layout("cityscapes", tmp_path))
    assert list(train) == ["aachen_000000_000019", "bochum_000000_000313"]
    val = _by_id(load_layout("cityscapes", tmp_path, split="val"))
    assert list(val) == ["lindau_000000_000019"]
    for sample in [*train.values(), *val.values()]:
        city = sample.id.split("_")[0]
        assert sample.image_path.parent.name == city and sample.image_path.name == f"{sample.id}_leftImg8bit.png"
        assert sample.label_path.name == f"{sample.id}_gtFine_labelTrainIds.png"
        assert sample.label_coding == "cityscapes_trainids"
        label = read_sample_label(sample, SHAPE)
        assert np.array_equal(label, np.where(raws[sample.id] == 255, 255, 0).astype(np.uint8))
        assert set(np.unique(label)) == {0, 255}


def test_cityscapes_errors(tmp_path: Path) -> None:
    _cityscapes_tree(tmp_path)
    with pytest.raises(DatasetError, match=r"leftImg8bit[/\\]test does not exist"):
        load_layout("cityscapes", tmp_path, split="test")
    train_ids = tmp_path / "gtFine" / "train" / "aachen" / "aachen_000000_000019_gtFine_labelTrainIds.png"
    _write(train_ids, np.full(SHAPE, 19, np.uint8))  # not a trainId
    sample = _by_id(load_layout("cityscapes", tmp_path))["aachen_000000_000019"]
    with pytest.raises(DatasetError, match=r"labelTrainIds\.png has values .*cityscapes_trainids.*: 19"):
        read_sample_label(sample)
    train_ids.unlink()  # only labelIds left: a half-prepared dataset
    with pytest.raises(DatasetError, match="labelTrainIds.png is missing.*createTrainIdLabelImgs"):
        load_layout("cityscapes", tmp_path)
    (tmp_path / "leftImg8bit" / "empty" / "nocity").mkdir(parents=True)
    with pytest.raises(DatasetError, match="no .*_leftImg8bit.png images"):
        load_layout("cityscapes", tmp_path, split="empty")


# ---------------------------------------------------------------- MVTec AD


def _mvtec_tree(root: Path) -> dict[str, np.ndarray]:
    for stem in ("000", "001"):
        _write(root / "bottle" / "train" / "good" / f"{stem}.png", _rgb(int(stem)))
    _write(root / "bottle" / "test" / "good" / "000.png", _rgb(3))
    masks = {}
    for i, defect in enumerate(["broken_large", "contamination"]):
        _write(root / "bottle" / "test" / defect / "000.png", _rgb(4 + i))
        masks[f"{defect}_000"] = _raw_label(i, [0, 255])
        _write(root / "bottle" / "ground_truth" / defect / "000_mask.png", masks[f"{defect}_000"])
    _write(root / "screw" / "train" / "good" / "000.png", _rgb(7))
    (root / "license_and_readme").mkdir()
    return masks


def test_mvtec_train_is_all_inlier_and_test_masks_decode_to_1(tmp_path: Path) -> None:
    masks = _mvtec_tree(tmp_path)
    train = _by_id(load_layout("mvtec", tmp_path, category="bottle"))  # split defaults to train
    assert list(train) == ["good_000", "good_001"]
    for stem, sample in zip(["000", "001"], train.values()):
        assert sample.image_path == tmp_path / "bottle" / "train" / "good" / f"{stem}.png"
        assert (sample.label_path, sample.label_coding, sample.has_label) == (None, INLIER_CODING, True)
        label = read_sample_label(sample)
        assert label.shape == SHAPE and not label.any()

    test = _by_id(load_layout("mvtec", tmp_path, category="bottle", split="test"))
    assert list(test) == ["broken_large_000", "contamination_000", "good_000"]
    assert not read_sample_label(test["good_000"], SHAPE).any()
    for sample_id, raw in masks.items():
        sample = test[sample_id]
        defect = sample_id[: -len("_000")]
        assert sample.image_path == tmp_path / "bottle" / "test" / defect / "000.png"
        assert sample.label_path == tmp_path / "bottle" / "ground_truth" / defect / "000_mask.png"
        label = read_sample_label(sample, SHAPE)
        assert np.array_equal(label, (raw == 255).astype(np.uint8))
        assert set(np.unique(label)) == {0, 1}


def test_mvtec_errors(tmp_path: Path) -> None:
    _mvtec_tree(tmp_path)
    with pytest.raises(DatasetError, match="needs a category=.*bottle, screw$"):
        load_layout("mvtec", tmp_path)
    with pytest.raises(DatasetError, match="no category 'carpet'.*bottle, screw$"):
        load_layout("mvtec", tmp_path, category="carpet")
    with pytest.raises(DatasetError, match="'train' or 'test', got 'val'"):
        load_layout("mvtec", tmp_path, category="bottle", split="val")
    with pytest.raises(DatasetError, match=r"screw[/\\]test does not exist"):
        load_layout("mvtec", tmp_path, category="screw", split="test")
    (tmp_path / "bottle" / "ground_truth" / "contamination" / "000_mask.png").unlink()
    with pytest.raises(DatasetError, match=r"contamination[/\\]000\.png has no mask.*000_mask\.png"):
        load_layout("mvtec", tmp_path, category="bottle", split="test")
    with pytest.raises(DatasetError, match="nowhere does not exist"):
        load_layout("mvtec", tmp_path / "nowhere", category="bottle")
    grey = np.zeros(SHAPE, np.uint8)
    grey[0, 0] = 128  # an anti-aliased mask value is not a valid MVTec mask
    _write(tmp_path / "bottle" / "ground_truth" / "contamination" / "000_mask.png", grey)
    sample = _by_id(load_layout("mvtec", tmp_path, category="bottle", split="test"))["contamination_000"]
    with pytest.raises(DatasetError, match="mvtec_mask coding does not define: 128"):
        read_sample_label(sample)


@pytest.mark.parametrize("layout", ["smiyc_anomaly", "smiyc_obstacle", "fishyscapes_laf", "fishyscapes_static",
                                    "cityscapes", "mvtec"])
def test_every_layout_names_a_missing_root(tmp_path: Path, layout: str) -> None:
    with pytest.raises(DatasetError, match=r"dataset root .*absent_root does not exist"):
        load_layout(layout, tmp_path / "absent_root")


# ---------------------------------------------------------------- COCO


def _encode_rle_string(runs: list[int]) -> str:
    """pycocotools' rleToString, ported: the inverse of COCO's compressed counts."""
    chars = []
    for i, run in enumerate(runs):
        value = run - runs[i - 2] if i > 2 else run
        more = True
        while more:
            code = value & 0x1F
            value >>= 5
            more = value != -1 if code & 0x10 else value != 0
            chars.append(chr(48 + (code | 0x20 if more else code)))
    return "".join(chars)


def _runs(mask: np.ndarray) -> list[int]:
    """Column-major run lengths starting with background, as COCO RLE counts."""
    flat = mask.T.ravel().astype(np.int8)
    changes = np.flatnonzero(np.diff(np.concatenate([[0], flat, [1 - flat[-1]]])))
    return np.diff(np.concatenate([[0], changes])).tolist()


def test_decode_rle_string_hand_computed_and_round_trip() -> None:
    # counts 5, 3, 40, then deltas 2-3=-1 -> 'O' and 10-40=-30 -> 'RO'; 40 = 8 + 1<<5 -> 'X1'
    assert decode_rle_string("53X1ORO") == [5, 3, 40, 2, 10]
    assert _encode_rle_string([5, 3, 40, 2, 10]) == "53X1ORO"
    rng = np.random.default_rng(0)
    for _ in range(20):
        runs = rng.integers(0, 3000, size=int(rng.integers(1, 40))).tolist()
        assert decode_rle_string(_encode_rle_string(runs)) == runs
    with pytest.raises(DatasetError, match="ends inside a count"):
        decode_rle_string("X")


def test_decode_rle_is_column_major_for_lists_and_strings() -> None:
    # 2x3 mask, column-major pixels: (0,0) (1,0) (0,1) (1,1) (0,2) (1,2) = 0 1 1 0 0 1
    expected = np.array([[0, 1, 0], [1, 0, 1]], bool)
    assert np.array_equal(decode_rle({"size": [2, 3], "counts": [1, 2, 2, 1]}), expected)
    assert np.array_equal(decode_rle({"size": [2, 3], "counts": _encode_rle_string([1, 2, 2, 1])}), expected)
    mask = np.random.default_rng(1).random((9, 13)) < 0.3
    assert np.array_equal(decode_rle({"size": [9, 13], "counts": _encode_rle_string(_runs(mask))}), mask)
    with pytest.raises(DatasetError, match="summing to 2x3=6"):
        decode_rle({"size": [2, 3], "counts": [1, 2]})


TRIANGLE = [20, 12, 30.5, 12, 20, 22.5]  # right angle at (20, 12); no pixel centre on its edges


def _triangle(shape: tuple[int, int]) -> np.ndarray:
    """TRIANGLE rasterised by hand: centre (j + .5, i + .5) inside iff i >= 12, j >= 20, (j-20) + (i-12) <= 9."""
    rows, cols = np.indices(shape)
    return (rows >= 12) & (cols >= 20) & ((cols - 20) + (rows - 12) <= 9)


def test_polygons_follow_coco_pixel_centre_convention() -> None:
    rect = polygons_to_mask([[5, 3, 15, 3, 15, 11, 5, 11]], 20, 30)
    expected = np.zeros((20, 30), bool)
    expected[3:11, 5:15] = True
    assert np.array_equal(rect, expected)
    assert np.array_equal(polygons_to_mask([TRIANGLE], 40, 50), _triangle((40, 50)))
    # parts are unioned (overlapping parts are not XOR-ed) and clipped to the image
    union = polygons_to_mask([[5, 3, 15, 3, 15, 11, 5, 11], [10, 0, 40, 0, 40, 5, 10, 5]], 20, 30)
    expected[0:5, 10:30] = True
    assert np.array_equal(union, expected)
    assert not polygons_to_mask([[-9, -9, -2, -9, -2, -2]], 20, 30).any()
    with pytest.raises(DatasetError, match="flat"):
        polygons_to_mask([[1, 2, 3]], 20, 30)


def _coco_fixture(tmp_path: Path) -> tuple[Path, Path, dict[str, np.ndarray]]:
    """instances JSON + images: 1 polygon (+ crowd RLE) image, 1 compressed-RLE image, 1 with a car, 1 too small."""
    images_dir = tmp_path / "train2017"
    categories = [{"id": i + 1, "name": name} for i, name in enumerate(EXCLUDED_CLASSES)]
    categories += [{"id": 18, "name": "dog"}, {"id": 38, "name": "kite"}]
    dog, kite, car = 18, 38, EXCLUDED_CLASSES.index("car") + 1
    images, annotations, expected = [], [], {}

    def add_image(image_id: int, shape: tuple[int, int], anns: list[tuple[int, object, int]]) -> str:
        name = f"{image_id:012d}.jpg"
        _write(images_dir / name, np.ascontiguousarray(_rgb(image_id, shape)[..., ::-1]))
        images.append({"id": image_id, "file_name": name, "height": shape[0], "width": shape[1]})
        for category, segmentation, crowd in anns:
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": category,
                                "segmentation": segmentation, "iscrowd": crowd})
        return Path(name).stem

    # polygons, in COCO's convention: a pixel is inside when its centre (col + .5, row + .5) is
    shape = (40, 50)
    mask = _triangle(shape)
    mask[3:11, 5:15] = True  # rectangle (5, 3)-(15, 11)
    crowd = np.zeros(shape, bool)
    crowd[25:30, 8:12] = True
    stem = add_image(7, shape, [
        (dog, [[5, 3, 15, 3, 15, 11, 5, 11]], 0),
        (dog, [TRIANGLE, [1, 1, 2, 2]], 0),  # a degenerate 2-point part adds nothing
        (dog, {"size": list(shape), "counts": _runs(crowd)}, 1),     # crowd: uncompressed RLE
    ])
    expected[stem] = mask | crowd

    shape = (36, 44)
    blob = np.zeros(shape, bool)
    blob[10:30, 6:9] = True
    blob[27:30, 6:40] = True
    blob[np.arange(12, 22), np.arange(20, 30)] = True  # a thin diagonal
    stem = add_image(9, shape, [(kite, {"size": list(shape), "counts": _encode_rle_string(_runs(blob))}, 0)])
    expected[stem] = blob

    add_image(3, (40, 50), [(dog, [[1, 1, 20, 1, 20, 20]], 0), (car, [[30, 30, 40, 30, 40, 38]], 0)])
    add_image(11, (24, 60), [(kite, [[1, 1, 20, 1, 20, 20]], 0)])  # min side 24 < 32
    add_image(12, (40, 40), [])  # no objects at all

    instances = tmp_path / "instances_train2017.json"
    instances.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return instances, images_dir, expected


def test_coco_cutouts_keep_only_clean_large_images_with_exact_masks(tmp_path: Path) -> None:
    instances, images_dir, expected = _coco_fixture(tmp_path)
    out = tmp_path / "bank"

    paths = coco_cutouts(instances, images_dir, out, min_side=32)

    assert paths == [out / "000000000007.png", out / "000000000009.png"]
    assert sorted(p.name for p in out.iterdir()) == ["000000000007.png", "000000000009.png"]
    for path in paths:
        mask = expected[path.stem]
        rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
        box = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
        bgra = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        assert bgra.shape == (*mask[box].shape, 4)
        assert np.array_equal(bgra[..., 3], np.where(mask[box], 255, 0).astype(np.uint8))
        source = read_image_rgb(images_dir / f"{path.stem}.jpg")
        assert np.array_equal(bgra[..., 2::-1], source[box])
    assert paths[0].stem == "000000000007" and cv2.imread(str(paths[0]), cv2.IMREAD_UNCHANGED).shape[:2] == (27, 25)

    bank = CutoutBank.from_dir(out)  # the output is directly an outlier-exposure bank
    assert len(bank) == 2 and np.array_equal(bank[1].mask, expected["000000000009"][10:30, 6:40])

    limited = coco_cutouts(instances, images_dir, tmp_path / "one", min_side=32, limit=1)
    assert limited == [tmp_path / "one" / "000000000007.png"]
    assert coco_cutouts(instances, images_dir, tmp_path / "none", min_side=480) == []  # default-size filter


def test_coco_cutouts_errors(tmp_path: Path) -> None:
    instances, images_dir, _ = _coco_fixture(tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DatasetError, match=r"empty[/\\]000000000007\.jpg"):  # an eligible image is missing
        coco_cutouts(instances, empty, tmp_path / "out", min_side=32)
    with pytest.raises(DatasetError, match="images directory .*absent does not exist"):
        coco_cutouts(instances, tmp_path / "absent", tmp_path / "out", min_side=32)
    data = json.loads(instances.read_text())
    data["categories"] = [c for c in data["categories"] if c["name"] != "person"]
    broken = tmp_path / "no_person.json"
    broken.write_text(json.dumps(data))
    with pytest.raises(DatasetError, match=r"no categories \['person'\]"):
        coco_cutouts(broken, images_dir, tmp_path / "out", min_side=32)
    data = json.loads(instances.read_text())
    (kite_rle,) = [a for a in data["annotations"] if a["image_id"] == 9]
    kite_rle["segmentation"]["size"] = [44, 36]  # transposed: decodes, but no longer fits its image
    broken.write_text(json.dumps(data))
    with pytest.raises(DatasetError, match="annotation .*does not match the image size"):
        coco_cutouts(broken, images_dir, tmp_path / "out", min_side=32)
    broken.write_text("{}")
    with pytest.raises(DatasetError, match="not a COCO instances file"):
        coco_cutouts(broken, images_dir, tmp_path / "out")
