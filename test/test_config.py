"""Config loading: every bad key or value fails on load with an error naming the key."""
from __future__ import annotations

import pytest
from conftest import tiny_config, write_config

from flowclas_ros.config import ConfigError, config_from_dict, load_config


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


@pytest.mark.parametrize("text, match", [
    ("a: &x [1, 2]\nb: *x\n", "aliases are not allowed"),
    ("- 1\n- 2\n", "a config is a mapping of sections, got a list"),
    ("seed: 0\nx: " + "[" * 40 + "]" * 40 + "\n", "nested deeper than 16"),
    ("data: {train: [{root: x}]}\ntrain:\n  lr: .inf\n", r"train\.lr: must be a finite number"),
])
def test_hostile_config_files_are_one_line_errors(tmp_path, text, match):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=match):
        load_config(path)


def test_config_file_kinds_and_sizes_are_bounded(tmp_path):
    bad = tmp_path / "latin1.yaml"
    bad.write_bytes(b"seed: 0\nname: caf\xe9\n")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(bad)
    big = tmp_path / "big.yaml"
    big.write_text("seed: 0\n" + "#" * (1 << 20) + "\n")
    with pytest.raises(ConfigError, match="larger than"):
        load_config(big)
    with pytest.raises(ConfigError, match="not a regular file"):
        load_config("/dev/zero")
    with pytest.raises(ConfigError, match="not a regular file"):
        load_config(tmp_path)
    huge = "x" * 5000
    with pytest.raises(ConfigError) as exc:
        config_from_dict({"data": {"train": [{"root": "x"}]}, "seed": huge})
    assert len(str(exc.value)) < 400  # an error is one bounded line
