"""The node's QoS profiles, in one place so the node, the demo, the benchmark and the tests agree.

Input: sensor-data style, best effort and keep-last `qos_depth` (1 by default): a detector that
falls behind should work on the newest frame, never on a queue of stale ones; a best-effort
subscription matches reliable and best-effort cameras alike. Outputs: reliable, keep last 2,
which a best-effort subscriber (RViz) also matches.

Each can be overridden the ROS way (REP-2003), at start-up, by parameters named after the
resolved topic, e.g. in the params file::

    qos_overrides:
      /camera/image_raw:
        subscription: {reliability: reliable, depth: 5, history: keep_last}
      /flowclas_detector/obstacle_mask:
        publisher: {reliability: best_effort}
"""
from __future__ import annotations

from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.qos_overriding_options import QoSOverridingOptions

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


def overridable() -> QoSOverridingOptions:
    """History, depth and reliability settable with `qos_overrides.<topic>.<entity>.<policy>`."""
    return QoSOverridingOptions.with_default_policies()
