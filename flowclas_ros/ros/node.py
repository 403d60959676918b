"""`flowclas_detector`: camera images in; anomaly heatmap, obstacle mask, overlay, diagnostics out.

The node is thin: parameters, QoS, conversion, publishing. The work is the runtime `Detector`, the
same one the replay tool and the evaluator use, so a frame gives the same heatmap everywhere.

Threading: the subscription callback only queues the message (at most `input_queue` frames; a
full queue drops its oldest, counted as dropped); a separate inference thread takes them in
order. A short queue answers every frame of a camera whose frames come in bursts (reliable DDS
delivers a repaired frame and the ones held behind it at once) while keeping latency bounded
when inference is slower than the camera; `input_queue: 1` always works on the newest frame.

With `use_depth`, a processed frame's mask and heatmap are handed to the 3D outputs
(ros/depth_outputs.py), which pair them with their depth by stamp on a thread of their own:
inference does not wait for depth, and a depth frame that arrives late still gets its cloud.
When the model carries the depth region stage (runtime/depth_regions.py), a frame being processed
takes its depth and CameraInfo from that cache, waiting at most `depth_regions_wait` for them, and
goes through the stage with them (the diagnostics count `depth_regions_<what it did>`; `no_depth`
for frames whose depth came later than that).

Nothing ends the node but a stop request: every callback, the timer and both worker threads run
under an `EdgeGuard` (ros/edge_guard.py) that catches, counts and logs what escapes them.
"""
from __future__ import annotations

import math
import signal
import sys
import threading
import time
from collections import OrderedDict, deque
from typing import Any, Optional

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import IntegerRange, ParameterDescriptor, SetParametersResult
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.signals import SignalHandlerOptions
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2
from visualization_msgs.msg import MarkerArray

from flowclas_ros.ros.depth_outputs import DepthOutputs, ProcessedFrame
from flowclas_ros.ros.edge_guard import EdgeGuard
from flowclas_ros.ros.messages import array_to_image_msg
from flowclas_ros.ros.qos import INPUT_RELIABILITY, input_subscriptions, output_qos, overridable
from flowclas_ros.ros.stats import NodeStats, Throttle
from flowclas_ros.runtime.detector import Detector
from flowclas_ros.runtime.images import ImageError
from flowclas_ros.runtime.model_info import ModelFileError
from flowclas_ros.runtime.node_interface import (
    CAMERA_INFO_TOPIC,
    COMPRESSED_INPUT_TOPIC,
    DEPTH_TOPIC,
    DIAGNOSTICS_TOPIC,
    INPUT_TOPIC,
    NODE_NAME,
    OUTPUTS,
    OUTPUTS_3D,
    PARAMETERS,
)
from flowclas_ros.runtime.obstacles3d import CameraIntrinsics, DepthError, check_sizes
from flowclas_ros.runtime.pipeline import decode_compressed_frame, decode_image_fields, run_frame, stamp_ns
from flowclas_ros.runtime.scene_alarm import ERROR, OK, WARN, alarm_level, describe, flagged_share

STOP_POLL_S = 0.1  # longest wait between a stop request and the start of the shutdown
DEPTH_CACHE = 30  # depth frames kept for matching: about 1 s of a 30 Hz camera
DEPTH_QOS_DEPTH = 5
SEEN_STAMPS = 64  # recent input stamps remembered to take each frame once (about 2 s at 30 Hz)
RECENT_PROBLEM_S = 10.0  # an internal error (ERROR) or bad input (WARN) colours diagnostics this long
_3D_TYPES = {"points": PointCloud2, "markers": MarkerArray}


def _descriptor(name: str, description: str, read_only: bool, rng: Optional[tuple]) -> ParameterDescriptor:
    """Integer ranges are enforced by rclpy. Float parameters are dynamically typed, so that
    `ros2 param set ... threshold 2` (an integer on the command line) is accepted; their type
    and range are checked by `_number` with a reason for every refusal."""
    d = ParameterDescriptor(name=name, description=description, read_only=read_only)
    if isinstance(PARAMETERS[name][0], float):
        d.dynamic_typing = True
        if rng is not None:
            d.description += f" (range {rng[0]:g} .. {rng[1]:g})"
    elif rng is not None:
        d.integer_range = [IntegerRange(from_value=rng[0], to_value=rng[1], step=1)]
    return d


def _number(name: str, value: Any) -> float:
    """A float parameter's value (an integer is accepted), or ValueError saying why not."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a number, got {type(value).__name__} {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    rng = PARAMETERS[name][3]
    if rng is not None and not rng[0] <= value <= rng[1]:
        raise ValueError(f"{name} must be in [{rng[0]:g}, {rng[1]:g}], got {value:g}")
    return value


class DetectorNode(Node):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(NODE_NAME, **kwargs)
        for name, (default, desc, ro, rng) in PARAMETERS.items():
            self.declare_parameter(name, default, _descriptor(name, desc, ro, rng))
        p = {name: self.get_parameter(name).value for name in PARAMETERS}
        for name, (default, *_rest) in PARAMETERS.items():
            if isinstance(default, float):
                p[name] = _number(name, p[name])  # ValueError: refused at start-up, with the reason
        if p["input_transport"] not in ("raw", "compressed"):
            raise ValueError(f"parameter input_transport must be 'raw' or 'compressed', got "
                             f"'{p['input_transport']}'")
        if p["input_reliability"] not in INPUT_RELIABILITY:
            raise ValueError(f"parameter input_reliability must be one of {', '.join(INPUT_RELIABILITY)}, "
                             f"got '{p['input_reliability']}'")
        self.detector = Detector(p["model_path"] or None, providers=list(p["providers"]),
                                 threshold=None if p["threshold"] < 0 else p["threshold"],
                                 min_area=p["min_obstacle_area"], threads=p["intra_op_threads"],
                                 spinning=p["intra_op_spinning"])
        self.alpha = float(p["overlay_alpha"])
        self.depth_regions_wait = float(p["depth_regions_wait"])
        self.scene_levels = (p["scene_warn_share"], p["scene_error_share"])
        self._scene_level = OK  # the alarm's level as last logged: each change is logged once
        self.stats = NodeStats()
        self.throttle = Throttle(p["log_throttle_period"])
        self.guard = EdgeGuard(self.get_logger(), self.stats, self.throttle)
        self._last_shape: Optional[tuple[int, ...]] = None
        self.add_on_set_parameters_callback(self.guard.wrap(
            "parameters", self._on_set_parameters,
            fallback=SetParametersResult(successful=False, reason="internal error; see the node's log")))

        qos_out = output_qos()
        self.pub = {key: self.create_publisher(Image, f"~/{topic}", qos_out,
                                               qos_overriding_options=overridable())
                    for key, topic, _ in OUTPUTS if p[f"publish_{key}"]}
        self.diag_pub = self.create_publisher(DiagnosticArray, DIAGNOSTICS_TOPIC, 10)
        msg_type, topic = ((CompressedImage, COMPRESSED_INPUT_TOPIC) if p["input_transport"] == "compressed"
                           else (Image, INPUT_TOPIC))
        # stamp -> subscription of the last frames taken: with input_reliability auto a reliable
        # camera's frame arrives on both subscriptions, not always back to back
        self._seen: OrderedDict[tuple[int, int], int] = OrderedDict()
        self.subs = [self.create_subscription(msg_type, topic, self.guard.wrap("image_callback",
                                                                               lambda msg, k=k: self._on_image(msg, k)),
                                              qos, qos_overriding_options=options)
                     for k, (qos, options) in enumerate(input_subscriptions(p["input_reliability"],
                                                                            p["qos_depth"]))]
        self.sub = self.subs[0]
        self.pub3d: dict[str, Any] = {}
        self.depth: Optional[DepthOutputs] = None
        if p["use_depth"]:
            self.pub3d = {key: self.create_publisher(_3D_TYPES[key], f"~/{topic}", qos_out,
                                                     qos_overriding_options=overridable())
                          for key, topic, _ in OUTPUTS_3D}
            self.depth = DepthOutputs(
                tolerance_s=p["depth_sync_tolerance"], wait_s=p["depth_wait"],
                max_frames=p["depth_pending_frames"], max_depth=DEPTH_CACHE,
                depth_scale=float(p["depth_scale"]), max_points=int(p["max_obstacle_points"]),
                stats=self.stats, throttle=self.throttle, guard=self.guard, logger=self.get_logger(),
                bad_input=self._bad_input, warn=self._warn,
                now_ns=lambda: self.get_clock().now().nanoseconds)
            both = input_subscriptions(p["input_reliability"], DEPTH_QOS_DEPTH)
            self.subs += [self.create_subscription(Image, DEPTH_TOPIC,
                                                   self.guard.wrap("depth_callback", self.depth.add_depth), qos)
                          for qos, _ in both]
            self.subs += [self.create_subscription(CameraInfo, CAMERA_INFO_TOPIC,
                                                   self.guard.wrap("camera_info_callback",
                                                                   self.depth.add_camera_info), qos)
                          for qos, _ in both]

        # frames waiting for inference, oldest first; a full queue drops its oldest (counted)
        self._queue: deque[tuple[Any, float]] = deque(maxlen=int(p["input_queue"]))
        self._cv = threading.Condition()
        self._stop = False
        self._worker = threading.Thread(target=self._run, name="flowclas-inference", daemon=True)
        self._worker.start()
        self.create_timer(p["diagnostics_period"], self.guard.wrap("diagnostics_timer", self._publish_diagnostics))
        i = self.detector.info
        self.get_logger().info(
            f"model {self.detector.model_path} (version {i.model_version}, input {i.input_size[1]}x"
            f"{i.input_size[0]}, threshold {self.detector.threshold:g}) on {self.detector.providers}; "
            f"listening on {self.sub.topic_name}")

    # -- receive (executor thread): keep only the newest frame ------------------------------
    def _on_image(self, msg: Any, subscription: int = 0) -> None:
        stamp = (msg.header.stamp.sec, msg.header.stamp.nanosec)
        first = self._seen.setdefault(stamp, subscription)
        if first != subscription:
            return  # the same frame through the other subscription (input_reliability auto)
        while len(self._seen) > SEEN_STAMPS:
            self._seen.popitem(last=False)
        with self._cv:
            replaced = len(self._queue) == self._queue.maxlen
            self._queue.append((msg, time.monotonic()))
            self._cv.notify()
        self.stats.on_received(replaced)

    # -- inference thread ------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._queue and not self._stop:
                    self._cv.wait()
                if self._stop:
                    return
                msg, received = self._queue.popleft()
            self.guard.run("inference", self._process_or_refuse, msg, received)

    def _process_or_refuse(self, msg: Any, received: float) -> None:
        try:
            self._process(msg, received)
        except ImageError as exc:
            self._bad_input(exc.kind, str(exc))

    def _wanted(self) -> dict[str, Any]:
        return {k: pub for k, pub in self.pub.items() if pub.get_subscription_count() > 0}

    def _process(self, msg: Any, received: float) -> None:
        wanted = self._wanted()
        wanted3d = {k: pub for k, pub in self.pub3d.items() if pub.get_subscription_count() > 0}
        if not wanted and not wanted3d:  # outputs nobody subscribes to are not computed
            with self.stats.lock:
                self.stats.skipped_no_subscribers += 1
            return
        if isinstance(msg, CompressedImage):
            rgb = decode_compressed_frame(msg.data, msg.format)
        else:
            rgb = decode_image_fields(msg.data, msg.height, msg.width, msg.encoding, msg.step,
                                      bool(msg.is_bigendian))
        if self._last_shape is not None and rgb.shape != self._last_shape:
            self._warn("size_changed", f"frame size changed mid-stream from {self._last_shape[1]}x"
                       f"{self._last_shape[0]} to {rgb.shape[1]}x{rgb.shape[0]}; processing it")
        self._last_shape = rgb.shape
        depth_m, intrinsics, unusable = self._depth_now(msg, rgb.shape)
        out = run_frame(self.detector, rgb, self.alpha, overlay="overlay" in wanted,
                        depth_m=depth_m, intrinsics=intrinsics)
        if self.detector.depth_regions is not None:
            self.stats.on_depth_stage(unusable or out.detection.depth_stage)
        det, header = out.detection, msg.header
        if "heatmap" in wanted:
            wanted["heatmap"].publish(array_to_image_msg(det.heatmap, "32FC1", header))
        if "mask" in wanted:
            wanted["mask"].publish(array_to_image_msg(det.mask, "mono8", header))
        if "overlay" in wanted:
            wanted["overlay"].publish(array_to_image_msg(out.overlay, "bgr8", header))
        if wanted3d and self.depth is not None:
            decoded = (depth_m, intrinsics) if depth_m is not None and intrinsics is not None else None
            self.depth.add_frame(ProcessedFrame(header, det.mask, det.heatmap, wanted3d, decoded))
        age_ms = (self.get_clock().now().nanoseconds - stamp_ns(msg)) / 1e6
        self.stats.on_processed((time.monotonic() - received) * 1e3, age_ms, flagged_share(det.heatmap, self.detector.threshold))

    def _depth_now(self, msg: Any, shape: tuple[int, ...]
                   ) -> tuple[Optional[np.ndarray], Optional[CameraIntrinsics], Optional[str]]:
        """The frame's aligned depth and intrinsics for the depth region stage, when the model
        carries one and they arrive within `depth_regions_wait` (else None, None). A depth frame that cannot be
        used sends the frame on without the stage, said as "bad_depth" (counted as
        `depth_regions_bad_depth`); the 3D outputs, which decode the same depth frame, count and
        log its problem once as bad input."""
        if self.depth is None or self.detector.depth_regions is None:
            return None, None, None
        pair = self.depth.depth_for(stamp_ns(msg), self.depth_regions_wait)
        if pair is None:
            return None, None, None
        try:
            depth_m, intrinsics = self.depth.decode(*pair)
            check_sizes(depth_m, intrinsics, shape)
        except (DepthError, ImageError):
            return None, None, "bad_depth"
        return depth_m, intrinsics, None

    # -- problems: one fixed severity per call site (rclpy refuses a change) ------------------
    def _bad_input(self, kind: str, message: str) -> None:
        self.stats.on_bad_input(kind)
        allowed, suppressed = self.throttle.allow(kind)
        if allowed:
            more = f" ({suppressed} more like this suppressed)" if suppressed else ""
            self.get_logger().error(f"bad input frame skipped [{kind}]: {message}{more}")

    def _warn(self, kind: str, message: str) -> None:
        self.stats.on_bad_input(kind)
        if self.throttle.allow(kind)[0]:
            self.get_logger().warning(message)

    def _log_scene_change(self, level: str, summary: str) -> None:
        """The domain-shift alarm's level changed: logged once per change, at its own severity."""
        previous, self._scene_level = self._scene_level, level
        text = f"scene alarm {previous.upper()} -> {level.upper()}: {summary}"
        if level == ERROR:
            self.get_logger().error(text)
        elif level == WARN:
            self.get_logger().warning(text)
        else:
            self.get_logger().info(text)

    # -- parameters ------------------------------------------------------------------------
    def _on_set_parameters(self, params: list[Parameter]) -> SetParametersResult:
        """Validate first, then apply all-or-nothing; every refusal says why (integer ranges and
        read-only parameters are enforced by rclpy, float ones by `_number`)."""
        updates: dict[str, Any] = {}
        for prm in params:
            try:
                if prm.name == "threshold":
                    value = _number("threshold", prm.value)
                    updates["threshold"] = self.detector.info.threshold if value < 0 else value
                elif prm.name == "min_obstacle_area":
                    updates["min_area"] = int(prm.value)
                elif prm.name == "overlay_alpha":
                    updates["alpha"] = _number("overlay_alpha", prm.value)
                elif prm.name in ("depth_sync_tolerance", "depth_wait", "depth_regions_wait"):
                    updates[prm.name] = _number(prm.name, prm.value)
                elif prm.name == "max_obstacle_points":
                    updates["max_points"] = int(prm.value)
                elif isinstance(PARAMETERS.get(prm.name, (None,))[0], float):
                    _number(prm.name, prm.value)  # read-only floats: type-checked all the same
            except ValueError as exc:
                return SetParametersResult(successful=False, reason=str(exc))
        for key, value in updates.items():
            if key == "alpha":
                self.alpha = value
            elif key in ("threshold", "min_area"):
                setattr(self.detector, key, value)
            elif key == "depth_regions_wait":
                self.depth_regions_wait = value
            elif self.depth is not None:  # the 3D outputs' settings (without use_depth: unused)
                if key == "depth_sync_tolerance":
                    self.depth.set_tolerance(value)
                elif key == "depth_wait":
                    self.depth.set_wait(value)
                else:
                    self.depth.max_points = int(value)
            self.get_logger().info(f"{key} set to {value:g}")
        return SetParametersResult(successful=True)

    # -- diagnostics -----------------------------------------------------------------------
    def _level(self, s: dict[str, Any]) -> tuple[int, str]:
        """Diagnostics level and message, the most severe reason first."""
        scene = OK
        if s["flagged_share_mean"] is not None:
            scene = alarm_level(s["flagged_share_mean"], self.scene_levels[0], self.scene_levels[1])
            if scene != self._scene_level:
                self._log_scene_change(scene, describe(s["flagged_share_mean"], s["flagged_share_frames"], scene))
        since_error = self.stats.seconds_since("internal_error")
        if since_error is not None and since_error < RECENT_PROBLEM_S:
            return DiagnosticStatus.ERROR, (f"internal error {since_error:.0f} s ago "
                                            f"({s['internal_error']} so far; see the node's log)")
        if scene != OK:
            return ((DiagnosticStatus.ERROR if scene == ERROR else DiagnosticStatus.WARN),
                    describe(s["flagged_share_mean"], s["flagged_share_frames"], scene))
        since_bad = self.stats.seconds_since("bad_input")
        if since_bad is not None and since_bad < RECENT_PROBLEM_S:
            return DiagnosticStatus.WARN, "bad input frames seen"
        if s["received"] and not s["processed"] and not s["skipped_no_subscribers"]:
            return DiagnosticStatus.WARN, "receiving but no frame processed yet"
        if s.get("depth_unmatched") and not s.get("depth_matched"):
            return DiagnosticStatus.WARN, "no colour frame has matched a depth frame yet"
        return DiagnosticStatus.OK, "ok"

    def _publish_diagnostics(self) -> None:
        s = self.stats.snapshot()
        level, summary = self._level(s)
        fmt = lambda v: "n/a" if v is None else (f"{v:.2f}" if isinstance(v, float) else str(v))  # noqa: E731
        values = {
            "model": str(self.detector.model_path),
            "model_version": self.detector.info.model_version,
            "backend": f"{self.detector.backend.name} {','.join(self.detector.providers)}",
            "threshold": f"{self.detector.threshold:g}",
            "input_topic": self.sub.topic_name,
            "scene_level": self._scene_level,
            **{k: fmt(v) for k, v in s.items() if k not in ("bad_input", "internal_errors")},
            **{f"bad_input.{k}": str(v) for k, v in sorted(s["bad_input"].items())},
            **{f"internal_error.{k}": str(v) for k, v in sorted(s["internal_errors"].items())},
        }
        status = DiagnosticStatus(level=level, name=f"{self.get_fully_qualified_name()}: anomaly detection",
                                  message=summary, hardware_id=str(self.detector.model_path),
                                  values=[KeyValue(key=k, value=v) for k, v in values.items()])
        arr = DiagnosticArray(status=[status])
        arr.header.stamp = self.get_clock().now().to_msg()
        self.diag_pub.publish(arr)

    def stop(self) -> None:
        with self._cv:
            self._stop = True
            self._cv.notify()
        self._worker.join(timeout=5.0)
        if self.depth is not None:
            self.depth.stop()


def main(args: Optional[list[str]] = None) -> int:
    """Entry point `detector` (`ros2 run flowclas_ros detector`). A missing or incompatible model
    fails at start-up with one clear line and exit status 1.

    Ctrl-C / SIGTERM (also during start-up) only request a stop; the node then shuts down in
    order: executor, inference worker, node, context. rclpy's own signal handlers are not
    installed because they shut the context down at once, under a callback that may be taking a
    message or publishing, which surfaces as a random exception (and a traceback) at exit."""
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    executor = SingleThreadedExecutor()
    node: Optional[DetectorNode] = None
    try:
        try:
            node = DetectorNode()
        except (ModelFileError, ValueError) as exc:
            rclpy.logging.get_logger(NODE_NAME).fatal(f"cannot start: {exc}")
            return 1
        executor.add_node(node)
        while not stop.is_set() and rclpy.ok():
            executor.spin_once(timeout_sec=STOP_POLL_S)
    except ExternalShutdownException:
        pass  # the context was shut down from outside: a clean stop
    finally:
        executor.shutdown(timeout_sec=5.0)
        if node is not None:
            node.stop()
            node.destroy_node()
        rclpy.try_shutdown()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0

if __name__ == "__main__":
    sys.exit(main())
