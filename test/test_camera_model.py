"""The camera model (data/camera_model.py): what it does to a frame, its use in training
augmentation and in the simulator's robot-style logs."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from conftest import tiny_config

from flowclas_ros.config import ConfigError, config_from_dict
from flowclas_ros.data.camera_model import ROBOT_CAMERA, CameraModel, jpeg_roundtrip


def _flat(value: int = 128, shape=(120, 160)) -> np.ndarray:
    return np.full((*shape, 3), value, np.uint8)


def test_default_model_is_the_identity_and_draws_no_random_numbers():
    rng = np.random.default_rng(0)
    rgb = np.random.default_rng(1).integers(0, 256, (40, 50, 3), dtype=np.uint8)
    assert CameraModel().is_identity and CameraModel().apply(rgb, rng) is rgb
    assert rng.random() == np.random.default_rng(0).random()


def test_read_and_shot_noise_have_the_stated_std():
    rng = np.random.default_rng(0)
    out = CameraModel(read_noise=6.0).apply(_flat(), rng).astype(np.float64)
    assert out.std() == pytest.approx(6.0, rel=0.05) and out.mean() == pytest.approx(128, abs=0.2)
    bright = CameraModel(shot_noise=0.5).apply(_flat(200), rng).astype(np.float64)
    dark = CameraModel(shot_noise=0.5).apply(_flat(20), rng).astype(np.float64)
    assert bright.std() == pytest.approx(0.5 * np.sqrt(200), rel=0.05)  # grows with the signal
    assert dark.std() == pytest.approx(0.5 * np.sqrt(20), rel=0.1)


def test_gain_vignetting_blur_and_jpeg():
    rng = np.random.default_rng(0)
    assert CameraModel(gain=1.5).apply(_flat(100), rng).mean() == pytest.approx(150, abs=0.5)
    v = CameraModel(vignetting=0.4).apply(_flat(200), rng)
    assert v[60, 80].mean() == pytest.approx(200, abs=1) and v[0, 0].mean() == pytest.approx(120, abs=2)
    edge = np.zeros((64, 64, 3), np.uint8)
    edge[:, 32:] = 255
    blurred = CameraModel(motion_blur_px=9.0).apply(edge, rng)
    assert 0 < blurred[32, 30].mean() < 255  # the step is smeared
    rgb = np.random.default_rng(2).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    low = CameraModel(jpeg_quality=20).apply(rgb, np.random.default_rng(3))
    assert np.array_equal(low, jpeg_roundtrip(rgb, 20)) and not np.array_equal(low, rgb)


def test_same_seed_same_frame_and_ranges_are_sampled():
    rgb = np.random.default_rng(2).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    a = ROBOT_CAMERA.apply(rgb, np.random.default_rng(5))
    assert np.array_equal(a, ROBOT_CAMERA.apply(rgb, np.random.default_rng(5)))
    assert not np.array_equal(a, ROBOT_CAMERA.apply(rgb, np.random.default_rng(6)))


@pytest.mark.parametrize("kwargs, match", [
    ({"read_noise": (5.0, 1.0)}, "read_noise.*min <= max"),
    ({"vignetting": 0.95}, "vignetting.*outside"),
    ({"jpeg_quality": 2}, "jpeg_quality.*outside"),
    ({"gain": "x"}, "gain"),
])
def test_bad_ranges_are_refused_with_their_name(kwargs, match):
    with pytest.raises(ValueError, match=match):
        CameraModel(**kwargs)
    with pytest.raises(ValueError, match="unknown key"):
        CameraModel.from_mapping({"exposure": 1})
    with pytest.raises(ValueError, match="HxWx3 uint8"):
        CameraModel(gain=2).apply(np.zeros((4, 4), np.uint8), np.random.default_rng(0))


def test_config_validates_the_augmentation_and_keeps_old_hashes(toy_world):
    base = tiny_config(toy_world)
    plain = config_from_dict(base)
    assert plain.augmentation.probability == 0.0
    assert "augmentation" not in base  # a config from before the section: its hash is unchanged
    same = config_from_dict({**base, "augmentation": {"probability": 0.0}})
    assert same.sha256() == plain.sha256()
    on = config_from_dict({**base, "augmentation": {"probability": 0.5, "camera": {"read_noise": [2, 8]}}})
    assert on.sha256() != plain.sha256()
    with pytest.raises(ConfigError, match=r"augmentation\.camera: .*read_noise"):
        config_from_dict({**base, "augmentation": {"probability": 0.5, "camera": {"read_noise": [8, 2]}}})
    with pytest.raises(ConfigError, match=r"augmentation\.probability"):
        config_from_dict({**base, "augmentation": {"probability": 2}})


def test_training_frames_augment_only_when_enabled(toy_world):
    from flowclas_ros.training.batches import TrainingFrames

    base = tiny_config(toy_world)
    off = TrainingFrames(config_from_dict(base))
    again = TrainingFrames(config_from_dict({**base, "augmentation": {"camera": {"read_noise": [4, 4]}}}))
    for a, b in zip(off.batch(3), again.batch(3)):  # probability 0: the same random stream
        assert np.array_equal(a.image, b.image) and a.modified == b.modified
    on = TrainingFrames(config_from_dict({**base, "augmentation": {
        "probability": 1.0, "camera": {"read_noise": [6, 6]}}}))
    frames = on.batch(3)
    assert all(f.modified for f in frames)  # never served from the clean feature cache
    clean = [f.image for f in off.batch(3)]
    assert any(not np.array_equal(f.image, c) for f, c in zip(frames, clean))


def test_sim_writes_camera_frames_and_a_jpeg_bag(tmp_path):
    pytest.importorskip("pybullet")
    from flowclas_ros.data.files import read_image_rgb
    from flowclas_ros.data.rosbag import COMPRESSED_IMAGE, Bag, decode_frame, deserialize
    from flowclas_ros.sim.generate import generate_split
    from flowclas_ros.sim.topics import GT_TOPIC, IMAGE_TOPIC

    clean = generate_split(tmp_path / "clean", "val", 1, seed=0, progress=False)
    s = generate_split(tmp_path / "robot", "val", 1, seed=0, bag=True, progress=False,
                       camera=dataclasses.replace(ROBOT_CAMERA, read_noise=(6.0, 6.0)), bag_jpeg=90)
    assert list(s["camera"]["read_noise"]) == [6.0, 6.0] and s["bag_jpeg_quality"] == 90
    assert clean["anomaly_pixel_fraction"] == s["anomaly_pixel_fraction"]  # labels unchanged
    a = read_image_rgb(tmp_path / "clean" / "images" / "val_00000.png")
    b = read_image_rgb(tmp_path / "robot" / "images" / "val_00000.png")
    assert a.shape == b.shape and np.abs(a.astype(int) - b.astype(int)).mean() > 2
    bag = Bag(tmp_path / "robot" / "bag")
    assert bag.topics[IMAGE_TOPIC] == COMPRESSED_IMAGE and GT_TOPIC in bag.topics
    (m,) = list(bag.messages([IMAGE_TOPIC]))
    assert np.array_equal(decode_frame(m.msgtype, deserialize(m)), b)  # the layout holds the log's pixels
