"""Fleet inputs: what a user names (bags, directories, globs, list files) -> the inputs to run,
and the content hash that keys a resumable run.

A spec is one of:

* a bag (rosbag2 directory, or a bare ``.mcap`` / ``.db3`` file) or a dataset directory (with
  ``images/``);
* a directory holding bags or datasets (its children, sorted by name, or when none of them is
  one, their children: ``sim --bag`` writes ``OUT/bag``);
* a glob (``logs/2026-11-*``; quote it for the shell), matched paths sorted;
* a list file: ``@runs.txt``, or any ``.txt`` / ``.list`` file: one spec per line, ``#``
  comments, paths relative to the list file.

Inputs named twice (the same resolved path) are run once, in the order first named. The content
hash is a SHA-256 of the input's files (names, sizes and bytes), so a bag copied elsewhere keeps
its key and an edited one gets a new one; it is computed by the worker that runs the input, and
remembered by (path, size, mtime) so a rerun does not read unchanged files again.
"""
from __future__ import annotations

import glob
import hashlib
import json
import os
from pathlib import Path
from typing import Iterable, Literal

from flowclas_ros.data.files import DatasetError

__all__ = ["content_hash", "expand_inputs", "input_files", "is_dataset", "stat_signature"]

Kind = Literal["bag", "dataset"]
LIST_SUFFIXES = (".txt", ".list")
MAX_LIST_LINES = 100_000  # a list file is read line by line up to this many specs
BLOCK = 1 << 20


def is_dataset(path: Path) -> bool:
    """A dataset root: a directory with an ``images/`` directory."""
    return path.is_dir() and (path / "images").is_dir()


def _is_input(path: Path, kind: Kind) -> bool:
    from flowclas_ros.training.recipes import is_bag

    return is_bag(path) if kind == "bag" else is_dataset(path)


def _read_list(path: Path) -> list[str]:
    specs = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for n, line in enumerate(f):
            if n >= MAX_LIST_LINES:
                raise DatasetError(f"list file {path}: more than {MAX_LIST_LINES} lines")
            line = line.split("#", 1)[0].strip()
            if line:
                p = Path(line).expanduser()
                specs.append(str(p if p.is_absolute() else path.parent / p))
    return specs


def _expand(spec: str, kind: Kind, depth: int) -> list[Path]:
    if depth > 4:
        raise DatasetError(f"list files nested more than 4 deep at {spec}")
    if spec.startswith("@"):
        return [p for s in _read_list(Path(spec[1:])) for p in _expand(s, kind, depth + 1)]
    path = Path(spec).expanduser()
    if path.is_file() and path.suffix in LIST_SUFFIXES:
        return [p for s in _read_list(path) for p in _expand(s, kind, depth + 1)]
    if any(c in spec for c in "*?[") and not path.exists():
        matched = sorted(glob.glob(os.path.expanduser(spec)))
        if not matched:
            raise DatasetError(f"{spec} matches nothing")
        return [Path(m) for m in matched if _is_input(Path(m), kind)]
    if not path.exists():
        raise DatasetError(f"{kind} {path} does not exist")
    if _is_input(path, kind):
        return [path]
    if path.is_dir():
        children = [p for p in sorted(path.iterdir()) if not p.name.startswith(".")]
        found = [p for p in children if _is_input(p, kind)]
        if not found:  # one level deeper: e.g. sim's OUT/bag of every OUT
            found = [q for c in children if c.is_dir() for q in sorted(c.iterdir())
                     if not q.name.startswith(".") and _is_input(q, kind)]
        if found:
            return found
    what = "rosbag2 bags" if kind == "bag" else "datasets (directories with images/)"
    raise DatasetError(f"{path} is not a {kind} and holds no {what}")


def expand_inputs(specs: Iterable[str], kind: Kind) -> list[Path]:
    """Every input the specs name, each once, in order (DatasetError naming a bad spec)."""
    out: list[Path] = []
    seen: set[Path] = set()
    for spec in specs:
        for p in _expand(str(spec), kind, 0):
            r = p.resolve()
            if r not in seen:
                seen.add(r)
                out.append(p)
    if not out:
        raise DatasetError("no inputs")
    return out


def input_files(path: Path) -> list[Path]:
    """The files whose content is the input: a bag's files, a file itself (sorted)."""
    if path.is_file():
        return [path]
    return sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))


def stat_signature(files: Iterable[Path]) -> str:
    """A cheap fingerprint (resolved paths, sizes, mtimes): unchanged files, same hash."""
    stats = [(str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns) for p in files]
    return hashlib.sha256(json.dumps(stats).encode()).hexdigest()


def content_hash(files: Iterable[Path], root: Path) -> str:
    """SHA-256 over the files' names (relative to ``root``), sizes and bytes."""
    h = hashlib.sha256()
    for p in files:
        rel = p.name if p == root else str(p.relative_to(root))
        h.update(f"{rel}\0{p.stat().st_size}\0".encode())
        with open(p, "rb") as f:
            while block := f.read(BLOCK):
                h.update(block)
    return h.hexdigest()
