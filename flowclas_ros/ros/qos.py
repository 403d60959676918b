"""The node's QoS profiles, in one place so the node, the demo, the benchmark and the tests agree.

Input: sensor-data style, best effort and keep-last `qos_depth` (1 by default): a detector that
falls behind should work on the newest frame, never on a queue of stale ones. Outputs: reliable,
keep last 2, which a best-effort subscriber (RViz) also matches.
"""
from __future__ import annotations

from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy

OUTPUT_DEPTH = 2


def profile(reliable: bool, depth: int) -> QoSProfile:
    """Keep-last `depth`, reliable or best effort."""
    return QoSProfile(depth=depth, history=HistoryPolicy.KEEP_LAST,
                      reliability=ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT)


def input_qos(depth: int) -> QoSProfile:
    """The camera subscription: best effort, keep the newest `depth` frames."""
    return profile(reliable=False, depth=depth)


def output_qos() -> QoSProfile:
    """The heatmap / mask / overlay publishers."""
    return profile(reliable=True, depth=OUTPUT_DEPTH)
