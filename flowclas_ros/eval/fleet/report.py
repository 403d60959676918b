"""The fleet's answer for people: the per-input table (worst first), the pooled metrics, files.

Files written by :func:`write_fleet_report` in the report directory:

* ``fleet.json``: the run (inputs, failures, throughput), the pooled metrics and the table;
* ``metrics.json``: the pooled metrics alone, the evaluator's keys (``evaluate`` on all the
  labelled frames with ``component_threshold="model"`` gives the same numbers);
* ``bags.csv`` / ``bags.json``: one row per input, worst first (failed inputs, then the alarm
  level, then F1 at the model threshold, then the share of pixels flagged);
* ``pr_curve.png`` / ``roc_curve.png``: the pooled pixel curves;
* ``frames/<input>.csv``: per-frame rows, written as shards finish; ``manifest.json`` and
  ``shards/``: what a rerun resumes from.
"""
from __future__ import annotations

import csv
import math
import statistics
from pathlib import Path
from typing import Any, Optional

from flowclas_ros.eval.pooled_stats import PooledStats
from flowclas_ros.eval.report import fmt_number, scene_line, to_json
from flowclas_ros.eval.report import format_summary as eval_summary

__all__ = ["format_fleet_summary", "unit_row", "write_fleet_report"]

LEVELS = {"error": 2, "warn": 1, "ok": 0}
WORST_SHOWN = 5  # rows in the summary text
_CSV = ("rank", "name", "status", "frames", "skipped_frames", "scored_frames", "auprc", "fpr95",
        "recall_at_threshold", "fpr_at_threshold", "f1_at_threshold", "siou", "ppv", "mean_f1",
        "recall_lt200", "recall_200_1000", "recall_1000_5000", "recall_ge5000", "alarm",
        "flagged_share_mean", "worst_frames", "ms_per_frame", "fps", "error", "input", "out",
        "where")
_BUCKETS = {"<200": "recall_lt200", "200-1000": "recall_200_1000",
            "1000-5000": "recall_1000_5000", ">=5000": "recall_ge5000"}


def _nan() -> float:
    return float("nan")


def _counts(parts: Any) -> dict[str, int]:
    """Per-outcome frame counts of the depth region stage, added up over shards or inputs."""
    total: dict[str, int] = {}
    for part in parts:
        for k, v in (part or {}).items():
            total[k] = total.get(k, 0) + int(v)
    return dict(sorted(total.items()))


def unit_row(name: str, path: str, n_shards: int, summaries: list[dict], errors: list[str],
             stats: Optional[PooledStats], shares: Any, base: dict, kind: str,
             settings: dict) -> dict:
    """One input's row: its shards' summaries added up, its metrics from its pooled stats."""
    from flowclas_ros.runtime.scene_alarm import scene_summary

    frames = sum(s.get("frames", 0) for s in summaries)
    status = "failed" if not summaries else "partial" if errors else "ok"
    row: dict[str, Any] = {
        "name": name, "input": path, "status": status, "error": "; ".join(errors) or None,
        "shards": n_shards, "frames": frames,
        "skipped_frames": sum(s.get("skipped_frames", 0) for s in summaries),
        "scored_frames": sum(s.get("scored_frames", 0) or 0 for s in summaries),
        "unmatched_frames": sum(s.get("unmatched_frames", 0) or 0 for s in summaries),
        "wall_s": sum(s.get("wall_s", 0.0) for s in summaries),
        "out": next((s.get("out") for s in summaries if s.get("out")), None),
        "where": ",".join(sorted({s.get("where", "") for s in summaries} - {""})) or None,
        "warnings": [w for s in summaries for w in s.get("warnings", [])],
        "notes": [n for s in summaries for n in s.get("notes", [])],
        "worst_frames": sorted((w for s in summaries for w in s.get("worst_frames", [])),
                               key=lambda w: (w["f1_model"], -1.0 if w["ap"] is None
                                              or math.isnan(w["ap"]) else w["ap"]))[:8],
        "scene": scene_summary(list(shares)),
        "metrics": None,
        "model_version": next((s.get("model_version") for s in summaries), None),
        "depth_stage": _counts(s.get("depth_stage") for s in summaries),
    }
    row["fps"] = frames / row["wall_s"] if row["wall_s"] > 0 else _nan()
    ms = [s["ms_per_frame"] for s in summaries if s.get("ms_per_frame") is not None
          and math.isfinite(s["ms_per_frame"])]
    row["ms_per_frame"] = (float(statistics.median(stats.times_ms)) if stats is not None
                           and kind == "evaluate" else float(statistics.median(ms)) if ms
                           else _nan())
    if stats is not None and len(stats):
        meta = {"model": base["model"], "providers": list(base["providers"]),
                "threshold": stats.threshold,
                "model_version": next((s.get("model_version") for s in summaries), None)}
        try:
            m = stats.result(meta, name, "rosbag2" if kind == "replay" else settings["layout"])
        except Exception as exc:  # noqa: BLE001 - e.g. the 0/255 refusal: this input's problem
            row["warnings"].append(f"no metrics: {exc}")
        else:
            row["metrics"] = {**m, "depth_stage": row["depth_stage"]}
            row["warnings"] += stats.label_warnings()
    return row


def _sort_key(row: dict) -> tuple:
    m = row["metrics"]
    f1 = m["at_model_threshold"]["f1"] if m else _nan()
    share = row["scene"]["flagged_share_mean"] or 0.0
    return (row["status"] == "ok", row["status"] == "partial",
            -LEVELS.get(row["scene"]["level"], 0),
            f1 if math.isfinite(f1) else math.inf, -share)


def _flat(row: dict, rank: int) -> dict:
    m = row["metrics"] or {}
    at = m.get("at_model_threshold", {})
    out = {"rank": rank, "name": row["name"], "status": row["status"],
           "frames": row["frames"], "skipped_frames": row["skipped_frames"],
           "scored_frames": row["scored_frames"],
           "auprc": m.get("auprc"), "fpr95": m.get("fpr95"),
           "recall_at_threshold": at.get("tpr"), "fpr_at_threshold": at.get("fpr"),
           "f1_at_threshold": at.get("f1"), "siou": m.get("siou"), "ppv": m.get("ppv"),
           "mean_f1": m.get("mean_f1"), "alarm": row["scene"]["level"],
           "flagged_share_mean": row["scene"]["flagged_share_mean"],
           "worst_frames": " ".join(f"{w['id']}:{fmt_number(w['f1_model'], '.1f')}"
                                    for w in row["worst_frames"][:5]),
           "ms_per_frame": row["ms_per_frame"], "fps": row["fps"], "error": row["error"],
           "input": row["input"], "out": row["out"], "where": row["where"]}
    for bucket, col in _BUCKETS.items():
        out[col] = (m.get("recall_by_size") or {}).get(bucket, {}).get("pixel_recall")
    return out


def write_fleet_report(report: Path, result: dict, rows: list[dict],
                       pooled: Optional[PooledStats], base: dict) -> None:
    """Fill ``result`` with the table, the failures and the pooled metrics; write the files."""
    from flowclas_ros.eval.report import plot_curves

    report.mkdir(parents=True, exist_ok=True)
    ranked = sorted(rows, key=_sort_key)
    result["bags"] = ranked
    result["failures"] = [{"name": r["name"], "input": r["input"], "error": r["error"]}
                          for r in ranked if r["error"]]
    result["scored_frames"] = sum(r["scored_frames"] for r in rows)
    result["skipped_frames"] = sum(r["skipped_frames"] for r in rows)
    result["worst_frames"] = sorted(
        ({**w, "input": r["name"]} for r in rows for w in r["worst_frames"]),
        key=lambda w: (w["f1_model"], -1.0 if w["ap"] is None or math.isnan(w["ap"])
                       else w["ap"]))[:10]
    result["pooled"] = None
    if pooled is not None and len(pooled):
        meta = {"model": base["model"], "providers": list(base["providers"]),
                "threshold": pooled.threshold,
                "model_version": next((r["model_version"] for r in rows if r["model_version"]), None)}
        layout = "rosbag2" if result["kind"] == "replay" else result["settings"].get("layout")
        try:
            result["pooled"] = pooled.result(meta, f"{result['inputs']} inputs", layout)
            result["pooled"]["warnings"] += pooled.label_warnings()
            result["pooled"]["depth_stage"] = _counts(r.get("depth_stage") for r in rows)
        except Exception as exc:  # noqa: BLE001 - e.g. all labels 0/255: say so, keep the table
            result["pooled_error"] = str(exc)
        if result["pooled"] is not None:
            (report / "metrics.json").write_text(to_json(result["pooled"], indent=2) + "\n")
            plot_curves(report, pooled.pixel.curves(), result["pooled"])
    (report / "bags.json").write_text(to_json(ranked, indent=2) + "\n")
    with open(report / "bags.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=_CSV, extrasaction="ignore")
        w.writeheader()
        for rank, row in enumerate(ranked, 1):
            w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v)
                        for k, v in _flat(row, rank).items()})
    (report / "fleet.json").write_text(to_json(result, indent=2) + "\n")


def format_fleet_summary(r: dict) -> str:
    lines = [f"{r['kind']} of {r['inputs']} inputs ({r['shards']} shards: {r['done']} done, "
             f"{r['failed']} failed, {r['reused_shards']} reused from the manifest), "
             f"{r['frames']} frames, {r['scored_frames']} scored; {r['engine']}",
             f"{fmt_number(r['wall_s'], '.1f')} s, {fmt_number(r['frames_per_s'], '.2f')} frames/s "
             "for the frames this run scored"]
    if r.get("pooled"):
        lines.append("pooled over every labelled frame:")
        lines.append(eval_summary({**r["pooled"], "report": None, "scene": None}))
    elif r.get("pooled_error"):
        lines.append(f"no pooled metrics: {r['pooled_error']}")
    if scene_line(r):
        lines.append(scene_line(r))
    lines.append("worst inputs first (F1 at the model threshold, alarm):")
    for rank, row in enumerate(r["bags"][:WORST_SHOWN], 1):
        m = row["metrics"]
        f1 = fmt_number(m["at_model_threshold"]["f1"], ".1f") if m else "n/a"
        lines.append(f"  {rank}. {row['name']}: {row['status']}, {row['frames']} frames, "
                     f"F1 {f1}, alarm {row['scene']['level']}"
                     + (f", error: {row['error']}" if row["error"] else ""))
    for f in r["failures"]:
        lines.append(f"failed: {f['input']}: {f['error']}")
    lines.append(f"report: {r['report']} (bags.csv, fleet.json, metrics.json)")
    return "\n".join(lines)
