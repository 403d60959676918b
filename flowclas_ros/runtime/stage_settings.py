"""The settings of a post-model stage carried in a model file, read one way for every stage.

Why: the region evidence, the zoomed band and the depth region stage each keep their settings as
JSON under one ONNX metadata key, written by a CLI verb and read by the `Detector`. A damaged
value must be refused the same way whatever the stage (the message names the key, the unknown
names and the known ones), so the parsing lives here once and each stage keeps only its own
value checks.
"""
from __future__ import annotations

import json
from dataclasses import fields
from typing import Any, Callable, Optional, TypeVar

S = TypeVar("S")


def checked_mapping(cls: type, data: Any, source: str, error: type[ValueError]) -> dict[str, Any]:
    """``data`` as a mapping of ``cls``'s field names, or ``error`` naming what is wrong."""
    if not isinstance(data, dict):
        raise error(f"{source}: expected a mapping of settings, got {type(data).__name__}")
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise error(f"{source}: unknown key(s) {', '.join(unknown)} (known: {', '.join(sorted(known))})")
    return data


def parse_json(text: str, source: str, error: type[ValueError]) -> Any:
    """A stage's settings text as JSON, or ``error`` saying it is not JSON."""
    try:
        return json.loads(text)
    except ValueError as exc:
        raise error(f"{source}: not JSON ({exc})") from exc


def carried(extra: dict[str, str], key: str, source: str,
            from_json: Callable[[str, str], S]) -> Optional[S]:
    """The stage a model file carries under metadata ``key`` (None when it carries none)."""
    text = extra.get(key, "")
    return from_json(text, f"{source}: {key}") if text.strip() else None
