"""What a replay leaves for people: the summary text, frames.csv, the scores-over-time plot, metrics.json.

The replay loop only makes heatmaps and an output bag; this module turns its per-frame rows and
the evaluator's metrics (when a ground-truth topic was given) into the replay summary and report
directory, reusing the evaluator's report (:mod:`flowclas_ros.eval.report`) so both verbs write
the same files. Only the standard library at import time; numpy and matplotlib are imported
inside the functions.
"""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Any, Optional

from flowclas_ros.eval.report import fmt_number, scene_line, to_json, worst_first
from flowclas_ros.eval.report import format_summary as eval_summary

__all__ = ["format_summary", "merge_metrics", "write_report"]

WORST_FRAMES = 8  # listed under worst_frames in the summary


def merge_metrics(result: dict, metrics: dict, per_frame: list[dict], scored_rows: list[int]
                  ) -> None:
    """The evaluator's keys into the replay summary; its per-frame scores onto the frame rows.
    ``frames`` and ``ms_per_frame`` stay the replay's (all frames, the whole node pipeline)."""
    own = {k: result[k] for k in ("frames", "ms_per_frame", "ms_per_frame_p95", "warnings", "scene")}
    result.update(metrics)
    result.update(own)
    result["scored_frames"] = metrics["frames"]
    result["warnings"] = metrics["warnings"] + own["warnings"]
    rows = result["per_frame"]
    for pf, row in zip(per_frame, scored_rows):
        rows[row].update({k: pf[k] for k in ("f1", "ap", "anomaly_pixels", "gt_components",
                                             "pred_components")})
    ranked = worst_first(per_frame)  # by F1 at the component threshold
    result["worst_frames"] = [{"id": r["id"], "f1": r["f1"], "ap": r["ap"]}
                              for r in ranked[:WORST_FRAMES]]


_CSV_COLUMNS = ("index", "id", "stamp_ns", "t_s", "max_score", "obstacles", "obstacle_pixels",
                "ms", "f1", "ap", "anomaly_pixels", "gt_components", "pred_components")


def write_report(out: Path, result: dict, ev: Any, rgb_dir: Optional[Path]) -> None:
    """The evaluator's report (when frames were scored) + frames.csv and scores_over_time.png
    for every frame; metrics.json holds the summary without the per-frame list."""
    import numpy as np

    out.mkdir(parents=True, exist_ok=True)
    summary = {k: v for k, v in result.items() if k != "per_frame"}
    if ev is not None:
        ev.write_report(out, summary, lambda i: np.load(rgb_dir / f"{i:07d}.npy"))
    else:
        (out / "metrics.json").write_text(to_json(summary, indent=2) + "\n")
    with open(out / "frames.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=_CSV_COLUMNS, extrasaction="ignore")
        w.writeheader()
        for row in result["per_frame"]:
            w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    _plot_over_time(out / "scores_over_time.png", result)


def _plot_over_time(path: Path, result: dict) -> None:
    from matplotlib.figure import Figure  # lazy; Figure + savefig uses Agg, no global backend

    rows = result["per_frame"]
    scored = [r for r in rows if "f1" in r]
    fig = Figure(figsize=(9, 5.5 if scored else 3.2), dpi=100)
    axes = fig.subplots(2 if scored else 1, 1, sharex=True, squeeze=False)[:, 0]
    ax = axes[0]
    ax.plot([r["t_s"] for r in rows], [r["max_score"] for r in rows], ".-", lw=0.8, ms=3,
            label="max score of the frame")
    ax.axhline(result["threshold"], color="red", lw=0.8, ls="--",
               label=f"threshold {result['threshold']:.4g}")
    ax.set(ylabel="anomaly score", title=f"{result['image_topic']}: {len(rows)} frames, "
           f"{result['skipped_frames']} skipped")
    ax.legend(loc="upper right", fontsize=8)
    ax.grid(True, alpha=0.3)
    if scored:
        ax = axes[1]
        ax.plot([r["t_s"] for r in scored], [r["f1"] for r in scored], "o", ms=3,
                label="F1 at the component threshold")
        ax.plot([r["t_s"] for r in scored], [r["ap"] for r in scored], "x", ms=4,
                label="AP (frames with anomaly pixels)")
        ax.set(ylabel="per frame, %", ylim=(-2, 102))
        ax.legend(loc="lower right", fontsize=8)
        ax.grid(True, alpha=0.3)
    axes[-1].set_xlabel("time since the first frame (s, header stamps)")
    fig.tight_layout()
    fig.savefig(path)


# ---------------------------------------------------------------- summary text


def format_summary(r: dict) -> str:
    lines = [f"replayed {r['frames']} frames of {r['image_topic']} from {r['bag']} -> {r['out']}",
             f"outputs: {', '.join(r['output_topics'].values())}",
             f"{fmt_number(r['fps'], '.1f')} frames/s overall, {fmt_number(r['ms_per_frame'])} ms/frame "
             f"pipeline (median)"]
    o3d = r.get("obstacles3d")
    if o3d:
        lines.append(f"3D outputs from {o3d['depth_topic']} + {o3d['camera_info_topic']}: "
                     f"{o3d['frames_with_3d']} frames, {', '.join(o3d['output_topics'].values())}")
    if r["skipped"]:
        lines.append("skipped: " + ", ".join(f"{k} {v}" for k, v in sorted(r["skipped"].items())))
    lines += [f"note: {n}" for n in r["notes"]]
    if r.get("scored_frames"):
        lines.append(f"ground truth {r['gt_topic']}: {r['scored_frames']} frames scored, "
                     f"{r['unmatched_frames']} without a label")
        lines.append(eval_summary({**r, "frames": r["scored_frames"], "report": None}))
        lines.append("worst frames (stamp, F1): " + ", ".join(
            f"{w['id']} {fmt_number(w['f1'], '.1f')}" for w in r["worst_frames"][:5]))
    else:
        lines += [line for line in (scene_line(r),) if line]
        lines += [f"warning: {w}" for w in r["warnings"]]
    if r.get("report"):
        lines.append(f"report: {r['report']}")
    return "\n".join(lines)
