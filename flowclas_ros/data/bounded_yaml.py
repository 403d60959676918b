"""YAML from files we did not write, read with limits: the one reader for configs and bag metadata.

Why: ``yaml.safe_load`` is safe against code execution but not against size. Aliases can make a
small file expand into gigabytes as soon as anything walks the result ("billion laughs"), deep
nesting overflows the parser's recursion, and an unbounded ``read_text`` loads any file whole.
Configs (:mod:`flowclas_ros.config.loading`) and rosbag2 ``metadata.yaml`` files
(:mod:`flowclas_ros.data.rosbag`) need none of anchors, aliases or deep nesting, so both are read
here with the same limits; each caller turns :class:`YamlLimitError` into its own error type.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

MAX_DEPTH = 16  # a config nests 4 deep, a rosbag2 metadata.yaml 6


class YamlLimitError(ValueError):
    """A YAML file or text outside the limits (size, aliases, nesting, encoding), or not valid
    YAML (:class:`YamlSyntaxError`); the message says which."""


class YamlSyntaxError(YamlLimitError):
    """Not valid YAML at all: a damaged file rather than a hostile one, which a reader of bag
    metadata can work around (the storage files hold the messages)."""


class _AliasFound(yaml.YAMLError):
    pass


class _NoAliasLoader(yaml.SafeLoader):
    """safe_load without anchors and aliases: neither configs nor bag metadata need them, and
    aliases can expand a small file into gigabytes ("billion laughs")."""

    def compose_node(self, parent, index):  # type: ignore[no-untyped-def]
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise _AliasFound(f"aliases are not allowed (line {event.start_mark.line + 1})")
        return super().compose_node(parent, index)


def parse_yaml(text: str, what: str, max_depth: int = MAX_DEPTH) -> Any:
    """One YAML document without aliases and nested at most ``max_depth`` levels."""
    try:
        data = yaml.load(text, Loader=_NoAliasLoader)  # noqa: S506 - a SafeLoader subclass
    except _AliasFound as exc:
        raise YamlLimitError(f"{what}: {exc}") from None
    except yaml.YAMLError as exc:
        raise YamlSyntaxError(f"{what}: not valid YAML: {str(exc)[:300]}") from None
    except RecursionError:
        raise YamlLimitError(f"{what}: nested too deeply") from None
    if _depth(data, max_depth) > max_depth:
        raise YamlLimitError(f"{what}: nested deeper than {max_depth} levels")
    return data


def _depth(value: Any, limit: int, level: int = 0) -> int:
    if level > limit:
        return level
    children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
    return max((_depth(v, limit, level + 1) for v in children), default=level)


def read_yaml_file(path: Path, max_bytes: int, what: str, max_depth: int = MAX_DEPTH) -> Any:
    """A regular UTF-8 file of at most ``max_bytes`` bytes, parsed by :func:`parse_yaml`.
    OSError (missing, unreadable) propagates: callers word it for their users."""
    if not path.is_file():
        raise YamlLimitError(f"cannot read {what} {path}: "
                             + ("not a regular file" if path.exists() else "no such file"))
    with open(path, "rb") as f:
        raw = f.read(max_bytes + 1)
    if len(raw) > max_bytes:
        raise YamlLimitError(f"{what} {path}: larger than {max_bytes} bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise YamlLimitError(f"{what} {path}: not UTF-8 text (byte {exc.start})") from None
    return parse_yaml(text, f"{what} {path}", max_depth)
