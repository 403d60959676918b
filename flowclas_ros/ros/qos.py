"""The node's QoS profiles, in one place so the node, the demo, the benchmark and the tests agree.

Input: keep-last `qos_depth` (5 by default): a reliable camera delivers a repaired frame and the
ones held behind it at once, and a shallower history would keep only the last of them; staleness
is bounded after the subscription, by the node's own `input_queue`. Reliability
(`input_reliability`): a best-effort subscription matches every camera, but it never asks a
reliable camera to resend a lost fragment, and a camera-sized frame over Fast DDS's default
transports is many fragments: from a stock camera (no large-image profile of its own) most frames
were lost (scripts/frame_delivery.py). A reliable subscription recovers them but does not match
best-effort cameras. `auto` (the default) therefore subscribes both ways: a reliable camera is
received reliably (its frames also reach the best-effort subscription and are taken once, by
header stamp), a best-effort camera matches the best-effort one. Outputs: reliable, keep last 2,
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

from typing import Optional

from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.qos_overriding_options import QoSOverridingOptions

OUTPUT_DEPTH = 2


def profile(reliable: bool, depth: int) -> QoSProfile:
    """Keep-last `depth`, reliable or best effort."""
    return QoSProfile(depth=depth, history=HistoryPolicy.KEEP_LAST,
                      reliability=ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT)


INPUT_RELIABILITY = ("auto", "reliable", "best_effort")


def input_qos(depth: int, reliable: bool = False) -> QoSProfile:
    """A camera subscription: keep the newest `depth` frames."""
    return profile(reliable=reliable, depth=depth)


def input_subscriptions(reliability: str, depth: int) -> list[tuple[QoSProfile, Optional[QoSOverridingOptions]]]:
    """(QoS, override options) of each input subscription for an `input_reliability` value. The
    two subscriptions of `auto` are not overridable (they would declare the same parameters)."""
    if reliability == "auto":
        return [(input_qos(depth, reliable=True), None), (input_qos(depth, reliable=False), None)]
    return [(input_qos(depth, reliable=reliability == "reliable"), overridable())]


def output_qos() -> QoSProfile:
    """The heatmap / mask / overlay publishers."""
    return profile(reliable=True, depth=OUTPUT_DEPTH)


def overridable() -> QoSOverridingOptions:
    """History, depth and reliability settable with `qos_overrides.<topic>.<entity>.<policy>`."""
    return QoSOverridingOptions.with_default_policies()
