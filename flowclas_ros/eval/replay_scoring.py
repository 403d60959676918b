"""Replay, scoring: each frame through the node's frame pipeline, its label paired by stamp.

Every frame of the image topic (sensor_msgs/Image or CompressedImage) is decoded and run exactly
as the node does it (``decode_frame`` then the shared runtime's ``run_frame``), so a frame gives
the same heatmap here as on the robot, whatever stage the runtime's frame path holds. Ground
truth (mono8 0 inlier / 1 anomaly / 255 void) is matched to frames by header stamp, in either
order; matched (heatmap, label) pairs go to a sink: the evaluator's
:class:`~flowclas_ros.eval.evaluate.Evaluation` (one bag, the full report) or a fleet shard's
:class:`~flowclas_ros.eval.pooled_stats.PooledStats`. Frames without a label are counted, not
scored; frames that cannot be decoded are skipped and counted per reason.
"""
from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any, Optional

from flowclas_ros.eval.replay_input import decode_label
from flowclas_ros.runtime.scene_alarm import flagged_share

__all__ = ["FrameScorer"]

# the sink's per-frame keys copied onto a replay frame row
SCORE_KEYS = ("f1", "f1_model", "ap", "anomaly_pixels", "gt_components", "pred_components")


class FrameScorer:
    """Frames -> heatmaps (the node's pipeline) -> frame rows; labels -> the sink.

    ``label_stamps``: stamps that will get a label (only their heatmaps are held until it comes).
    ``sink``: has ``add(frame_id, heat, label, ms)``; a dict it returns holds per-frame scores
    merged into the frame's row. ``rgb_dir``: where the scored frames' RGB is kept for the
    report's montages (None: not kept). ``overlay``: render the overlay (for an output bag).
    """

    def __init__(self, detector: Any, overlay_alpha: float, overlay: bool,
                 label_stamps: set[int], sink: Any = None, rgb_dir: Optional[Path] = None) -> None:
        self.det, self.overlay_alpha, self.overlay = detector, overlay_alpha, overlay
        self.label_stamps, self.sink, self.rgb_dir = label_stamps, sink, rgb_dir
        self.rows: list[dict] = []
        self.pipeline_ms: list[float] = []
        self.skipped: Counter[str] = Counter()
        self.gt_skipped: Counter[str] = Counter()
        self.depth_stage: Counter[str] = Counter()  # what the depth region stage did, per frame
        self.pending_heat: dict[int, tuple[int, Any, float, Any]] = {}  # stamp -> (row, heat, ms, rgb)
        self.pending_label: dict[int, Any] = {}  # stamp -> label that came before its frame
        self.scored_rows: list[int] = []  # row index of each frame fed to the sink, in order

    def frame(self, msgtype: str, msg: Any, t: int, depth: Any = None) -> Optional[Any]:
        """One deserialized image message at bag time ``t``: its FrameOutput, or None when it
        cannot be decoded (counted in ``skipped``). ``depth``: the replay's `ReplayDepth`
        (eval/replay_depth.py) when the depth region stage runs; what the stage did per frame is
        counted in ``depth_stage``."""
        import numpy as np

        from flowclas_ros.data.rosbag import BagFrameError, decode_frame
        from flowclas_ros.runtime.images import ImageError
        from flowclas_ros.runtime.pipeline import run_frame, stamp_ns

        try:
            t0 = time.perf_counter()
            rgb = decode_frame(msgtype, msg)
            depth_m, intrinsics, why = (None, None, None) if depth is None else depth.take(stamp_ns(msg), rgb.shape)
            res = run_frame(self.det, rgb, self.overlay_alpha, overlay=self.overlay,
                            depth_m=depth_m, intrinsics=intrinsics)
            ms = (time.perf_counter() - t0) * 1e3
        except (BagFrameError, ImageError) as exc:
            self.skipped[exc.kind] += 1
            return None
        d = res.detection
        self.depth_stage[why or d.depth_stage] += 1  # as the evaluator counts it ("off": no stage)
        st = stamp_ns(msg)
        self.pipeline_ms.append(ms)
        self.rows.append({"index": len(self.rows), "id": f"{st // 10**9}.{st % 10**9:09d}",
                          "stamp_ns": st, "log_time_ns": t,
                          "max_score": float(d.heatmap.max()),
                          "obstacles": len(d.obstacles),
                          "obstacle_pixels": int(np.count_nonzero(d.mask)),
                          "flagged_share": flagged_share(d.heatmap, self.det.threshold), "ms": ms})
        if self.sink is not None and st in self.label_stamps:
            det_ms = d.timings_ms["total"]
            if st in self.pending_label:
                self._score(len(self.rows) - 1, d.heatmap, self.pending_label.pop(st), det_ms, rgb)
            else:
                self.pending_heat[st] = (len(self.rows) - 1, d.heatmap, det_ms, rgb)  # rgb: contrast
        return res

    def label(self, msg: Any) -> None:
        """One deserialized ground-truth message; unusable ones are counted in ``gt_skipped``."""
        from flowclas_ros.data.files import DatasetError
        from flowclas_ros.data.rosbag import BagFrameError
        from flowclas_ros.runtime.images import ImageError
        from flowclas_ros.runtime.pipeline import stamp_ns

        try:
            label = decode_label(msg)
        except (BagFrameError, ImageError) as exc:
            self.gt_skipped[exc.kind] += 1
            return
        except DatasetError:
            self.gt_skipped["bad_values"] += 1
            return
        st = stamp_ns(msg)
        if st in self.pending_heat:
            row, heat, det_ms, rgb = self.pending_heat.pop(st)
            self._score(row, heat, label, det_ms, rgb)
        else:
            self.pending_label[st] = label

    def _score(self, row: int, heat: Any, label: Any, ms: float, rgb: Any) -> None:
        import numpy as np

        if label.shape != heat.shape:
            self.gt_skipped["shape_mismatch"] += 1
            return
        if self.rgb_dir is not None:
            np.save(self.rgb_dir / f"{len(self.scored_rows):07d}.npy", rgb)
        scores = self.sink.add(self.rows[row]["id"], heat, label, ms, rgb)
        if isinstance(scores, dict):
            self.rows[row].update({k: scores[k] for k in SCORE_KEYS})
        self.scored_rows.append(row)
