"""The resumable run's manifest: which shards are done, with which model and settings.

``<report>/manifest.json`` holds one entry per shard key, the key being a SHA-256 of the shard's
content hash, the model file's hash and the settings that change the numbers (topics,
threshold, filters, frame range): a rerun with the same model and settings skips a shard whose
content has not changed, wherever the file now lives; a new model, a changed setting or an
edited bag runs it again. A done shard's statistics are in ``<report>/shards/<key>.npz`` (numpy
arrays and JSON, read without pickle). Failed shards are recorded with their error and run again
on the next run. The manifest is rewritten atomically after every shard, so a run killed at any
point resumes from the last shard it finished.

It also remembers each input's content hash by (path, size, mtime) signature, so a rerun knows
the keys of unchanged inputs without reading them again.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Optional

from flowclas_ros.data.files import DatasetError

__all__ = ["MANIFEST_VERSION", "Manifest", "file_hash", "shard_key"]

MANIFEST_VERSION = 1
MAX_MANIFEST_BYTES = 256 << 20  # a manifest larger than this is not ours


def file_hash(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def shard_key(content: str, model_hash: str, settings: dict) -> str:
    blob = json.dumps({"v": MANIFEST_VERSION, "content": content, "model": model_hash,
                       "settings": settings}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


class Manifest:
    """``entries``: key -> {"status": "ok" | "failed", "input", "summary" | "error", ...};
    ``hashes``: stat signature -> content hash."""

    def __init__(self, report: Path) -> None:
        self.path = report / "manifest.json"
        self.shards = report / "shards"
        self.entries: dict[str, dict] = {}
        self.hashes: dict[str, str] = {}
        if self.path.is_file():
            if self.path.stat().st_size > MAX_MANIFEST_BYTES:
                raise DatasetError(f"{self.path} is larger than {MAX_MANIFEST_BYTES >> 20} MiB: "
                                   "not a fleet manifest; use another --report directory")
            try:
                data = json.loads(self.path.read_text())
                if data.get("version") != MANIFEST_VERSION:
                    raise ValueError(f"version {data.get('version')}")
                self.entries = dict(data["entries"])
                self.hashes = dict(data["hashes"])
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                raise DatasetError(f"{self.path} is not a fleet manifest this version reads "
                                   f"({exc}); use another --report directory") from None

    def done(self, key: str) -> Optional[dict]:
        """The entry of a shard finished with these settings, when its statistics are there."""
        e = self.entries.get(key)
        if e is None or e.get("status") != "ok":
            return None
        if e.get("stats") and not (self.shards / e["stats"]).is_file():
            return None
        return e

    def done_keys(self) -> frozenset[str]:
        return frozenset(k for k in self.entries if self.done(k) is not None)

    def stats_path(self, key: str) -> Path:
        self.shards.mkdir(parents=True, exist_ok=True)
        return self.shards / f"{key}.npz"

    def record(self, key: str, entry: dict[str, Any], signature: Optional[str] = None,
               content: Optional[str] = None) -> None:
        self.entries[key] = entry
        if signature and content:
            self.hashes[signature] = content
        self.save()

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"version": MANIFEST_VERSION, "entries": self.entries,
                                   "hashes": self.hashes}, allow_nan=True))
        tmp.replace(self.path)
