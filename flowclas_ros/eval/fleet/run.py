"""The fleet driver: many inputs through the pool, one pooled answer, resumable.

:func:`run_fleet` expands the inputs, cuts them into shards (a bag is one shard; a dataset is
cut into ranges of ``shard_frames`` frames), skips the shards its manifest already holds with
the same content, model and settings, runs the rest on the pool (local processes or a Dask
cluster, :mod:`flowclas_ros.data.pool`), and records each shard as it finishes (statistics in
``shards/``, per-frame rows in ``frames/``, the manifest). A shard that fails is recorded with its
error and the others go on. At the end the shards' statistics are merged in input order, one
at a time (memory: one pixel table and a few numbers per frame, whatever the number of inputs),
into each input's row and into the pooled metrics over every labelled frame: the numbers a
single process would give on the same frames (:mod:`flowclas_ros.eval.pooled_stats`).
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from flowclas_ros.data.pool import run_tasks
from flowclas_ros.eval.component_filters import MIN_GT_AREA, MIN_PRED_AREA
from flowclas_ros.eval.fleet.inputs import expand_inputs, stat_signature
from flowclas_ros.eval.fleet.manifest import Manifest, file_hash
from flowclas_ros.eval.fleet.report import unit_row, write_fleet_report
from flowclas_ros.eval.fleet.tasks import Shard, run_shard, shard_files
from flowclas_ros.eval.pooled_stats import PooledStats
from flowclas_ros.runtime.scene_alarm import scene_summary

__all__ = ["run_fleet"]

log = logging.getLogger(__name__)

KINDS = ("replay", "evaluate")
DEFAULT_SHARD_FRAMES = 500  # frames per shard of a dataset


def _names(inputs: Sequence[Path]) -> list[str]:
    """Unique short names: the input's name, with its parent's when names repeat."""
    names = [p.stem if p.is_file() else p.name for p in inputs]
    if len(set(names)) < len(names):
        names = [f"{p.resolve().parent.name}_{n}" for p, n in zip(inputs, names)]
    if len(set(names)) < len(names):
        names = [f"{n}_{i}" for i, n in enumerate(names)]
    return names


def _shards(kind: str, inputs: list[Path], names: list[str], settings: dict, base: dict,
            out: Optional[Path], shard_frames: int) -> list[Shard]:
    shards = []
    for u, (path, name) in enumerate(zip(inputs, names)):
        common = dict(kind=kind, input=str(path), unit=u, name=name, settings=settings, **base)
        if kind == "replay":
            shards.append(Shard(**common, out=str(out / name) if out is not None else None))
            continue
        from flowclas_ros.eval.evaluate import eval_items

        frames, _ = eval_items(str(path), settings["layout"], None,
                               settings.get("layout_options") or None)
        n = len(frames)
        for lo in range(0, n, shard_frames):
            shards.append(Shard(**common, frames=(lo, min(n, lo + shard_frames))))
    return shards


EVALUATE_DEFAULTS = {"layout": "generic", "layout_options": {}, "min_pred_area": MIN_PRED_AREA,
                     "min_gt_area": MIN_GT_AREA, "image_score": "max", "image_top_k": 0.01,
                     "regions": "model"}


def _full_settings(kind: str, settings: dict) -> dict:
    """Every setting with its default filled in (they key the manifest), checked here once
    rather than failing in every worker."""
    if kind == "replay":
        from flowclas_ros.eval.replay import ReplayOptions

        try:
            return ReplayOptions(**settings).settings()
        except TypeError as exc:
            raise ValueError(f"replay settings: {exc}") from None
    unknown = set(settings) - set(EVALUATE_DEFAULTS)
    if unknown:
        raise ValueError(f"evaluate settings: unknown {sorted(unknown)}; known {sorted(EVALUATE_DEFAULTS)}")
    return {**EVALUATE_DEFAULTS, **settings}


def _save_shard(path: Path, stats_state: Optional[tuple], flagged: list[float]) -> None:
    arrays, meta = stats_state if stats_state is not None else ({}, None)
    with open(path, "wb") as f:
        np.savez_compressed(f, meta_json=np.frombuffer(json.dumps(meta).encode(), np.uint8),
                            all_flagged_shares=np.asarray(flagged, np.float64), **arrays)


def _load_shard(path: Path) -> tuple[Optional[PooledStats], np.ndarray]:
    with np.load(path, allow_pickle=False) as z:
        meta = json.loads(z["meta_json"].tobytes().decode())
        flagged = z["all_flagged_shares"].astype(np.float64)
        if meta is None:
            return None, flagged
        arrays = {k: z[k] for k in z.files if k not in ("meta_json", "all_flagged_shares")}
    return PooledStats.from_state(arrays, meta), flagged


def _write_frames_csv(path: Path, rows: list[dict]) -> None:
    import csv

    cols = ["index", "id", "stamp_ns", "t_s", "max_score", "obstacles", "obstacle_pixels",
            "flagged_share", "f1_model", "ap", "anomaly_pixels", "gt_components",
            "pred_components", "image_score", "ms"]
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})


class _Bars:
    """Progress over shards and frames (tqdm on stderr), or nothing."""

    def __init__(self, shards: int, frames: Optional[int], enabled: bool, what: str) -> None:
        self.bars: list[Any] = []
        if enabled:
            try:
                from tqdm import tqdm
            except ImportError:
                return
            self.bars = [tqdm(total=shards, desc=what, unit=what[:-1], file=sys.stderr,
                              position=0),
                         tqdm(total=frames, desc="frames", unit="frame", file=sys.stderr,
                              position=1)]

    def shard(self) -> None:
        if self.bars:
            self.bars[0].update()

    def frames(self, n: int) -> None:
        if self.bars:
            self.bars[1].update(n)

    def close(self) -> None:
        for b in self.bars:
            b.close()


def _expected_frames(kind: str, shards: list[Shard]) -> Optional[int]:
    if kind == "evaluate":
        return sum(s.frames[1] - s.frames[0] for s in shards)
    try:
        from flowclas_ros.data.rosbag import Bag

        total = 0
        for s in shards:
            b = Bag(s.input)
            image = [t for t in b.image_topics() if t == s.settings.get("image_topic")] or \
                [t for t in b.image_topics() if "depth" not in t and t != s.settings.get("gt_topic")]
            total += b.expected.get(image[0], 0) if image else 0
        return total or None
    except Exception:  # noqa: BLE001 - only the progress bar's total
        return None


@dataclasses.dataclass
class _Progress:
    """What the run knows about its shards: manifest keys, errors, counts."""

    keys: dict[int, str] = dataclasses.field(default_factory=dict)  # shard index -> key
    failures: dict[int, str] = dataclasses.field(default_factory=dict)  # shard index -> error
    reused: int = 0  # shards taken from the manifest
    ran_frames: int = 0  # frames scored by this run


def _plan(shards: list[Shard], manifest: Manifest, state: _Progress) -> list[tuple[int, Shard]]:
    """The shards to run: not in the manifest with this content, model and settings (known
    without reading an unchanged file), or whose asked-for output bag is missing."""
    done_keys = manifest.done_keys()
    todo = []
    for i, sh in enumerate(shards):
        content = None
        try:
            files, _ = shard_files(sh)
            content = manifest.hashes.get(stat_signature(files))
        except Exception:  # noqa: BLE001 - the worker meets the same error and reports it
            pass
        if sh.out is not None and not Path(sh.out).exists():  # output asked, not there: run it
            todo.append((i, dataclasses.replace(sh, content=content)))
            continue
        if content is not None and manifest.done(sh.key(content)) is not None:
            state.keys[i] = sh.key(content)
            state.reused += 1
            continue
        todo.append((i, dataclasses.replace(sh, content=content, done=done_keys)))
    return todo


def _record(o: Any, i: int, sh: Shard, manifest: Manifest, report: Path, state: _Progress,
            bars: _Bars) -> None:
    """One finished task into the manifest (and its statistics and frame rows to disk)."""
    fail_key = f"failed:{sh.input}:{sh.frames}"
    if not o.ok:
        state.failures[i] = o.error
        log.warning("%s failed: %s", sh.label, o.error)
        manifest.record(fail_key, {"status": "failed", "input": sh.input, "label": sh.label,
                                   "error": o.error, "where": o.where})
        return
    r = o.value
    manifest.entries.pop(fail_key, None)
    state.keys[i] = r["key"]
    if r["reused"]:  # the worker found the content unchanged
        state.reused += 1
        manifest.record(r["key"], manifest.entries[r["key"]], r["signature"], r["content"])
        return
    summary = {**r["summary"], "where": o.where}
    state.ran_frames += int(summary.get("frames", 0))
    _save_shard(manifest.stats_path(r["key"]), r["stats"], summary.pop("flagged_shares"))
    _write_frames_csv(report / "frames" / f"{sh.label}.csv", r["per_frame"])
    if not o.where.startswith("local"):  # no live frame counter from cluster workers
        bars.frames(summary.get("frames", 0))
    manifest.record(r["key"], {"status": "ok", "input": sh.input, "label": sh.label,
                               "unit": sh.unit, "summary": summary, "stats": f"{r['key']}.npz",
                               "where": o.where, "content": r["content"]},
                    r["signature"], r["content"])


def _pool(inputs: list[Path], names: list[str], shards: list[Shard], manifest: Manifest,
          state: _Progress, base: dict, kind: str, settings: dict
          ) -> tuple[list[dict], Optional[PooledStats], np.ndarray]:
    """(one row per input, the pooled statistics, every frame's flagged share): the shards'
    statistics merged in input order, one shard in memory at a time."""
    pooled: Optional[PooledStats] = None
    all_flagged: list[np.ndarray] = []
    rows = []
    for u, (path, name) in enumerate(zip(inputs, names)):
        unit_shards = [i for i, s in enumerate(shards) if s.unit == u]
        unit_stats: Optional[PooledStats] = None
        summaries, errors, flagged = [], [], []
        for i in unit_shards:
            if i in state.failures:
                errors.append(state.failures[i])
                continue
            entry = manifest.entries[state.keys[i]]
            summaries.append(entry["summary"])
            stats, shares = _load_shard(manifest.shards / entry["stats"])
            flagged.append(shares)
            if stats is not None:
                if unit_stats is None:
                    unit_stats = stats
                else:
                    unit_stats.merge(stats)
        shares = np.concatenate(flagged) if flagged else np.zeros(0)
        all_flagged.append(shares)
        rows.append(unit_row(name, str(path), len(unit_shards), summaries, errors, unit_stats,
                             shares, base, kind, settings))
        if unit_stats is not None:
            if pooled is None:
                pooled = unit_stats
            else:
                pooled.merge(unit_stats)
    return rows, pooled, np.concatenate(all_flagged) if all_flagged else np.zeros(0)


def run_fleet(kind: str, specs: Sequence[str], report: str | Path,
              model: Optional[str] = None, settings: Optional[dict] = None, *,
              out: Optional[str | Path] = None, workers: int = 0, cluster: Optional[str] = None,
              providers: Sequence[str] = ("cpu",), threads: int = 0, force: bool = False,
              progress: bool = True, shard_frames: int = DEFAULT_SHARD_FRAMES) -> dict:
    """Run ``kind`` ("replay" or "evaluate") over every input ``specs`` name; returns the
    fleet result (see :func:`flowclas_ros.eval.fleet.report.write_fleet_report`) and writes it
    to ``report``. ``settings``: for replay the fields of
    :class:`flowclas_ros.eval.replay.ReplayOptions` (not providers / threads); for evaluate
    ``layout``, ``layout_options``, ``min_pred_area``, ``min_gt_area``, ``image_score``,
    ``image_top_k``. ``out``: replay's output bags, one per input, in this directory.
    ``workers``: local processes (0: one per core, at most one per shard to run; 1: this
    process), or with ``cluster`` Dask's ("local" or a scheduler address). ``threads``: ONNX Runtime threads per worker (0: its share of the
    cores). ``force``: replace existing output bags of the inputs that run."""
    from flowclas_ros.runtime.model_info import resolve_model_path

    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    t_start = time.perf_counter()
    report = Path(report)
    inputs = expand_inputs(specs, "bag" if kind == "replay" else "dataset")
    names = _names(inputs)
    model_path = resolve_model_path(model)
    model_hash = file_hash(model_path)
    settings = _full_settings(kind, settings or {})
    base = {"model": str(model_path.resolve()), "model_hash": model_hash,
            "providers": tuple(providers), "threads": int(threads), "force": bool(force)}
    shards = _shards(kind, inputs, names, settings, base, Path(out) if out else None,
                     max(1, int(shard_frames)))
    manifest = Manifest(report)
    state = _Progress()
    todo = _plan(shards, manifest, state)
    log.info("%d inputs, %d shards: %d already done with this model and settings, %d to run",
             len(inputs), len(shards), state.reused, len(todo))
    bars = _Bars(len(shards), _expected_frames(kind, [s for _, s in todo]), progress,
                 "bags" if kind == "replay" else "shards")
    for _ in range(state.reused):
        bars.shard()
    try:
        for o in run_tasks(run_shard, [s for _, s in todo], workers, cluster, bars.frames):
            bars.shard()
            _record(o, *todo[o.index], manifest, report, state, bars)
    finally:
        bars.close()
    wall = time.perf_counter() - t_start

    rows, pooled, shares = _pool(inputs, names, shards, manifest, state, base, kind, settings)
    result = {
        "kind": kind, "inputs": len(inputs), "shards": len(shards),
        "done": len(shards) - len(state.failures), "failed": len(state.failures),
        "reused_shards": state.reused, "frames": sum(r["frames"] for r in rows),
        "scene": scene_summary(shares.tolist()),
        "model": str(model_path), "model_hash": model_hash, "settings": settings,
        "engine": (f"dask {cluster}" if cluster else
                   f"local, {min(workers or os.cpu_count() or 1, max(1, len(todo)))} worker(s)"),
        "workers": workers, "wall_s": wall, "scored_this_run": state.ran_frames,
        "frames_per_s": state.ran_frames / wall if wall > 0 and state.ran_frames else float("nan"),
        "report": str(report), "out": str(out) if out else None,
    }
    write_fleet_report(report, result, rows, pooled, base)
    return result
