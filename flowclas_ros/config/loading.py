"""YAML loading: read, apply `key.path=value` overrides, type-check every key, range-check
(`validation`), and resolve data paths relative to the config file."""
from __future__ import annotations

import dataclasses
import math
import types
import typing
from pathlib import Path
from typing import Any, Optional, Union

from flowclas_ros.config.schema import Config, ConfigError
from flowclas_ros.config.validation import _validate
from flowclas_ros.data import bounded_yaml

_CHOICES = {
    "model.resize_policy": ("stretch", "letterbox"),
    "train.schedule": ("onecycle", "cosine", "constant"),
    "outlier_exposure.flow_negatives.context": ("ignore", "inlier"),
}


def _check_type(value: Any, tp: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _check_type(value, inner[0], key)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, key)
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {type(value).__name__} ({value!r})")
        (item_tp,) = typing.get_args(tp)
        return [_check_type(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true/false, got {_shown(value)}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {_shown(value)}")
        return value
    if tp is float:
        if isinstance(value, str):  # PyYAML (YAML 1.1) reads `1e-3` as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {_shown(value)}")
        if not math.isfinite(value):
            raise ConfigError(f"{key}: must be a finite number, got {value}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {_shown(value)}")
        return value
    raise ConfigError(f"{key}: unsupported type {tp}")  # pragma: no cover - schema bug


def _build(cls: type, data: Any, prefix: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix or 'config'}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in data:
        if key not in fields:
            where = f"{prefix}.{key}" if prefix else str(key)
            raise ConfigError(f"unknown key '{where}' (allowed here: {', '.join(sorted(fields))})")
    kwargs = {}
    for name, f in fields.items():
        key = f"{prefix}.{name}" if prefix else name
        if name in data:
            kwargs[name] = _check_type(data[name], hints[name], key)
            if key in _CHOICES and kwargs[name] not in _CHOICES[key]:
                raise ConfigError(f"{key}: {kwargs[name]!r} is not one of {_CHOICES[key]}")
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"missing required key '{key}'")
    return cls(**kwargs)


def _resolve_paths(cfg: Config, base: Path) -> None:
    """Relative data paths are relative to the config file, so configs are relocatable."""

    def fix(p: Optional[str]) -> Optional[str]:
        if p is None:
            return None
        q = Path(p).expanduser()
        return str(q if q.is_absolute() else (base / q).resolve())

    for src in cfg.data.train:
        src.root = fix(src.root)
    if cfg.data.val is not None:
        cfg.data.val.root = fix(cfg.data.val.root)
    cfg.outlier_exposure.bank = fix(cfg.outlier_exposure.bank)
    cfg.outlier_exposure.flow_negatives.generator = fix(cfg.outlier_exposure.flow_negatives.generator)
    cfg.outlier_exposure.flow_patches.cache_dir = fix(cfg.outlier_exposure.flow_patches.cache_dir)
    cfg.model.backbone.weights = fix(cfg.model.backbone.weights)


def apply_override(data: dict, assignment: str) -> None:
    """`a.b.c=value` with the value parsed as YAML (so numbers, booleans and lists work)."""
    if "=" not in assignment:
        raise ConfigError(f"override '{assignment}' must look like key.path=value")
    key, raw = assignment.split("=", 1)
    parts = key.strip().split(".")
    node = data
    for i, part in enumerate(parts[:-1]):
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            where = ".".join(parts[: i + 1])
            raise ConfigError(f"override '{key}': '{where}' is not a mapping")
    node[parts[-1]] = parse_yaml(raw, f"override '{key}'")


def config_from_dict(data: Any, base_dir: Path | str = ".") -> Config:
    cfg = _build(Config, data, "")
    _validate(cfg)
    _resolve_paths(cfg, Path(base_dir))
    return cfg


MAX_CONFIG_BYTES = 1 << 20  # a training config is a few KiB; anything near this is not one


def parse_yaml(text: str, what: str) -> Any:
    """A YAML document with the limits a config needs (no aliases, bounded nesting)."""
    try:
        return bounded_yaml.parse_yaml(text, what)
    except bounded_yaml.YamlLimitError as exc:
        raise ConfigError(str(exc)) from None


def _shown(value: Any) -> str:
    """A value in an error line, bounded: a line must stay a line."""
    text = repr(value)
    return text if len(text) <= 200 else text[:200] + f"... ({len(text)} characters)"


def load_config(path: str | Path, overrides: list[str] | None = None) -> Config:
    """Load, override (`key.path=value`), type-check and range-check a training config."""
    path = Path(path)
    try:
        data = bounded_yaml.read_yaml_file(path, MAX_CONFIG_BYTES, "config file")
    except bounded_yaml.YamlLimitError as exc:
        raise ConfigError(str(exc)) from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config is a mapping of sections, got a {type(data).__name__}")
    for item in overrides or []:
        apply_override(data, item)
    try:
        return config_from_dict(data, path.parent)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from exc
