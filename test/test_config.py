"""Config loading: every bad key or value fails on load with an error naming the key."""
from __future__ import annotations

import pytest
from conftest import tiny_config, write_config

from flowclas_ros.config import ConfigError, load_config


def _load(tmp_path, cfg, overrides=None):
    return load_config(write_config(tmp_path / "c.yaml", cfg), overrides)


def test_valid_config_loads_with_defaults_and_resolves_paths(tmp_path):
    cfg = _load(tmp_path, {"data": {"train": [{"root": "frames"}]}, "outlier_exposure": {"bank": "b"}})
    assert cfg.data.train[0].root == str((tmp_path / "frames").resolve())
    assert cfg.outlier_exposure.bank == str((tmp_path / "b").resolve())
    assert cfg.model.input_size == [240, 320]
    assert cfg.train.lr == pytest.approx(2e-4)
    assert len(cfg.sha256()) == 64


@pytest.mark.parametrize("mutate, key", [
    (lambda c: c["model"].__setitem__("flwo", {}), "model.flwo"),
    (lambda c: c["model"]["flow"].__setitem__("hiden_channels", 3), "model.flow.hiden_channels"),
    (lambda c: c.__setitem__("trian", {}), "trian"),
    (lambda c: c["train"].__setitem__("batch_size", "eight"), "train.batch_size"),
    (lambda c: c["train"].__setitem__("lr", -1), "train.lr"),
    (lambda c: c["outlier_exposure"].__setitem__("probability", 1.5), "outlier_exposure.probability"),
    (lambda c: c["model"].__setitem__("resize_policy", "crop"), "model.resize_policy"),
    (lambda c: c["model"].__setitem__("input_size", [100, 80]), "model.input_size"),
    (lambda c: c["model"]["backbone"].__setitem__("taps", [32]), "model.backbone.taps"),
    (lambda c: c["model"]["backbone"].__setitem__("int8_calibration_frames", 0),
     "model.backbone.int8_calibration_frames"),
    (lambda c: c["model"]["backbone"].__setitem__("int8_features", "yes"), "model.backbone.int8_features"),
    (lambda c: c["data"]["train"][0].pop("root"), "data.train[0].root"),
    (lambda c: c.pop("data"), "data"),
    (lambda c: c["data"].__setitem__("hflip", "yes"), "data.hflip"),
])
def test_bad_key_or_value_names_the_key(tmp_path, mutate, key):
    cfg = tiny_config(tmp_path)
    mutate(cfg)
    with pytest.raises(ConfigError) as err:
        _load(tmp_path, cfg)
    assert key in str(err.value)
    assert "c.yaml" in str(err.value)  # and the file


def test_contrastive_weight_needs_outlier_exposure(tmp_path):
    cfg = tiny_config(tmp_path, outlier_exposure={"enabled": False})
    with pytest.raises(ConfigError, match="loss.contrastive_weight"):
        _load(tmp_path, cfg)


def test_nf_only_ablation_from_the_same_file_by_overrides(tmp_path):
    cfg = _load(tmp_path, tiny_config(tmp_path),
                ["loss.contrastive_weight=0", "outlier_exposure.enabled=false"])
    assert cfg.loss.contrastive_weight == 0.0
    assert cfg.outlier_exposure.enabled is False
    with pytest.raises(ConfigError, match="unknown key 'loss.weight'"):
        _load(tmp_path, tiny_config(tmp_path), ["loss.weight=0"])


def test_yaml_exponent_floats_and_unreadable_files(tmp_path):
    p = tmp_path / "e.yaml"
    p.write_text("data: {train: [{root: x}]}\noutlier_exposure: {bank: b}\ntrain: {lr: 1e-3}\n")
    assert load_config(p).train.lr == pytest.approx(1e-3)
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def test_yaml_is_loaded_safely(tmp_path):
    p = tmp_path / "evil.yaml"
    p.write_text("data: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(p)
