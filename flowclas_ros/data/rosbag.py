"""rosbag2 logs as data: robust image reading for `flowclas-ros replay` and the `rosbag2` layout.

Reading is pure Python (`rosbags`: rosbag2 MCAP and sqlite3, no ROS install). A bag is a rosbag2
directory (``metadata.yaml`` + storage files) or a bare ``.mcap`` / ``.db3`` file. Robots pull
power and disks fill up, so logs are often damaged; :class:`Bag` reads every message it can:

* an intact bag is read by ``rosbags.rosbag2.Reader`` (time ordered, through the index);
* when rosbags cannot open the bag (an MCAP file cut short has no footer or summary) or fails
  part-way (a corrupt chunk), each storage file is read by a record-by-record MCAP scan that keeps
  every complete message, skips a chunk whose checksum or compression is broken, and stops at
  the cut; messages already delivered are not delivered twice;
* how many messages of a topic were lost is known when the bag's metadata (or index) gives the
  topic's message count (:meth:`Bag.lost`); what went wrong is in :attr:`Bag.notes`.

The ``rosbag2`` dataset layout built on it lives in :mod:`flowclas_ros.data.rosbag_layout`.
"""
from __future__ import annotations

import functools
import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional

import cv2
import numpy as np

from flowclas_ros.data.bounded_yaml import YamlLimitError, YamlSyntaxError, read_yaml_file
from flowclas_ros.data.files import DatasetError, PathLike
from flowclas_ros.data.mcap_salvage import McapScan
from flowclas_ros.runtime.images import image_msg_fields
from flowclas_ros.runtime.obstacles3d import (
    CameraIntrinsics,
    MarkerSpec,
    camera_info_fields,
    cloud_msg_fields,
    split_seconds,
)
from flowclas_ros.runtime.pipeline import decode_compressed_frame, decode_image_fields

log = logging.getLogger(__name__)

IMAGE = "sensor_msgs/msg/Image"
COMPRESSED_IMAGE = "sensor_msgs/msg/CompressedImage"
IMAGE_MSGTYPES: tuple[str, ...] = (IMAGE, COMPRESSED_IMAGE)
CAMERA_INFO = "sensor_msgs/msg/CameraInfo"
POINT_CLOUD2 = "sensor_msgs/msg/PointCloud2"
MARKER_ARRAY = "visualization_msgs/msg/MarkerArray"
# A rosbag2 metadata.yaml is a few KiB per topic and split file; one this large is not one, and
# is refused before rosbags (which reads it whole, aliases and all) sees it.
MAX_METADATA_BYTES = 4 << 20


class BagError(DatasetError):
    """A bag, a topic in it, or an output bag path the user has to fix; the message says how."""


class BagFrameError(ValueError):
    """One message that cannot become a frame; ``kind`` is a stable counter name
    (``deserialize_error`` or one of :data:`~flowclas_ros.runtime.images.IMAGE_ERROR_KINDS`)."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class BagMessage:
    topic: str
    msgtype: str
    log_time_ns: int  # the bag's receive time stamp
    raw: bytes  # CDR


# ---------------------------------------------------------------- messages -> frames


@functools.lru_cache(maxsize=1)
def typestore() -> Any:
    """The message definitions used to (de)serialize images (ROS 2 Jazzy's; Image and
    CompressedImage are identical in every ROS 2 release since Foxy)."""
    from rosbags.typesys import Stores, get_typestore

    return get_typestore(Stores.ROS2_JAZZY)


def deserialize(message: BagMessage) -> Any:
    """CDR -> message object, or :class:`BagFrameError` ``deserialize_error``."""
    try:
        return typestore().deserialize_cdr(message.raw, message.msgtype)
    except Exception as exc:  # noqa: BLE001 - rosbags raises SerdeError, struct/Index/Value errors
        raise BagFrameError("deserialize_error", f"{message.topic} message at {message.log_time_ns} "
                         f"does not deserialize as {message.msgtype}: {exc}") from exc


def header_message(stamp_ns: int, frame_id: str) -> Any:
    """A rosbags std_msgs/Header."""
    ts = typestore()
    stamp = ts.types["builtin_interfaces/msg/Time"](sec=stamp_ns // 10**9, nanosec=stamp_ns % 10**9)
    return ts.types["std_msgs/msg/Header"](stamp=stamp, frame_id=frame_id)


def image_message(array: np.ndarray, encoding: str, header: Any) -> Any:
    """A rosbags sensor_msgs/Image of ``array`` (fields as the node publishes them) with ``header``."""
    fields = image_msg_fields(array, encoding)
    fields["data"] = np.frombuffer(fields["data"], np.uint8)  # rosbags serialises arrays
    return typestore().types[IMAGE](header=header, **fields)


def camera_info_message(intrinsics: CameraIntrinsics, header: Any) -> Any:
    """A rosbags sensor_msgs/CameraInfo of an undistorted pinhole camera."""
    t = typestore().types
    f = camera_info_fields(intrinsics)
    for key in ("d", "k", "r", "p"):
        f[key] = np.asarray(f[key], np.float64)
    roi = t["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0,
                                                 do_rectify=False)
    return t[CAMERA_INFO](header=header, roi=roi, **f)


def cloud_message(points: np.ndarray, header: Any) -> Any:
    """A rosbags sensor_msgs/PointCloud2 of N x 4 (x, y, z, score) points, as the node publishes it."""
    t = typestore().types
    f = cloud_msg_fields(points)
    fields = [t["sensor_msgs/msg/PointField"](name=n, offset=o, datatype=d, count=c)
              for n, o, d, c in f.pop("fields")]
    f["data"] = np.frombuffer(f["data"], np.uint8)
    return t[POINT_CLOUD2](header=header, fields=fields, **f)


def marker_array_message(specs: Iterable[MarkerSpec], header: Any) -> Any:
    """A rosbags visualization_msgs/MarkerArray of the runtime's marker contents (as the node's)."""
    t = typestore().types
    markers = []
    for m in specs:
        sec, nanosec = split_seconds(m.lifetime_s)
        markers.append(t["visualization_msgs/msg/Marker"](
            header=header, ns=m.ns, id=m.id, type=m.type, action=m.action,
            pose=t["geometry_msgs/msg/Pose"](
                position=t["geometry_msgs/msg/Point"](x=m.position[0], y=m.position[1], z=m.position[2]),
                orientation=t["geometry_msgs/msg/Quaternion"](x=0.0, y=0.0, z=0.0, w=1.0)),
            scale=t["geometry_msgs/msg/Vector3"](x=m.scale[0], y=m.scale[1], z=m.scale[2]),
            color=t["std_msgs/msg/ColorRGBA"](r=m.rgba[0], g=m.rgba[1], b=m.rgba[2], a=m.rgba[3]),
            lifetime=t["builtin_interfaces/msg/Duration"](sec=sec, nanosec=nanosec),
            frame_locked=False, points=[], colors=[], texture_resource="",
            texture=t[COMPRESSED_IMAGE](header=header, format="", data=np.zeros(0, np.uint8)),
            uv_coordinates=[], text=m.text, mesh_resource="",
            mesh_file=t["visualization_msgs/msg/MeshFile"](filename="", data=np.zeros(0, np.uint8)),
            mesh_use_embedded_materials=False))
    return t[MARKER_ARRAY](markers=markers)


def jpeg_message(rgb: np.ndarray, quality: int, header: Any) -> tuple[Any, np.ndarray]:
    """A rosbags sensor_msgs/CompressedImage of ``rgb`` as JPEG (format as image_transport
    writes it), and the RGB frame that decoding it gives back (what a robot's log holds)."""
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    msg = typestore().types[COMPRESSED_IMAGE](header=header, format="rgb8; jpeg compressed bgr8",
                                              data=buf.reshape(-1))
    return msg, decode_compressed_frame(buf, "jpeg")


def decode_frame(msgtype: str, msg: Any) -> np.ndarray:
    """An Image or CompressedImage message -> HxWx3 RGB, exactly as the node decodes it
    (:class:`~flowclas_ros.runtime.images.ImageError` on a bad frame)."""

    if msgtype == COMPRESSED_IMAGE:
        return decode_compressed_frame(msg.data, msg.format)
    return decode_image_fields(msg.data, msg.height, msg.width, msg.encoding, msg.step,
                               bool(msg.is_bigendian))


# ---------------------------------------------------------------- topics

# Words in a topic name (split at "/", "_", "-") that mark an image topic as something other than
# the camera: ground truth, masks, depth, or a detector's own outputs.
_NOT_CAMERA_WORDS: dict[str, str] = {
    **dict.fromkeys(("gt", "groundtruth", "label", "labels", "annotation", "annotations"),
                    "its name says it holds ground-truth labels"),
    **dict.fromkeys(("mask", "masks", "seg", "segmentation", "semantic"),
                    "its name says it holds masks or segmentation"),
    **dict.fromkeys(("depth", "disparity"), "its name says it holds depth"),
    **dict.fromkeys(("heatmap", "overlay"), "its name says it holds detector output"),
}


def not_a_camera(topic: str) -> Optional[str]:
    """Why an image topic is not taken as the camera by default (None: it may be the camera):
    the explicit name rule behind :meth:`Bag.pick_image_topic`."""
    name = topic.lower().replace("ground_truth", "groundtruth").replace("ground-truth", "groundtruth")
    words = [w for part in name.split("/") for w in part.replace("-", "_").split("_") if w]
    for w in words:
        if w in _NOT_CAMERA_WORDS:
            return f"{_NOT_CAMERA_WORDS[w]} ('{w}')"
    return None


# ---------------------------------------------------------------- writing


def chunk_crc_writer(path: PathLike) -> Any:
    """A rosbags rosbag2 ``Writer`` (MCAP storage, format version 9, not yet opened) whose chunks
    carry their CRC-32, so a reader can tell a chunk damaged on disk from a good one.

    Why: rosbags writes every chunk's CRC as 0 ("not computed"), and a bit flipped inside an
    uncompressed chunk then reads back as a valid frame with wrong pixels. Every bag this package
    writes (``flowclas-ros sim --bag``, replay's output) goes through here.
    """
    from rosbags.rosbag2 import StoragePlugin

    return _crc_writer_class()(Path(path), version=9, storage_plugin=StoragePlugin.MCAP)


@functools.lru_cache(maxsize=1)
def _crc_writer_class() -> type:
    import struct
    import zlib

    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.rosbag2.storage_mcap import McapWriter

    class CrcMcapWriter(McapWriter):
        """rosbags' MCAP storage writer, then the chunk's CRC patched into its header.
        Chunk record: opcode u8, length u64, start time u64, end time u64, uncompressed size u64,
        uncompressed CRC u32 (MCAP spec); the chunk index rosbags keeps holds its offset."""

        def close_chunk(self) -> None:
            crc = zlib.crc32(self.chunk.bio.getbuffer())
            super().close_chunk()
            chunk_start = struct.unpack_from("<Q", self.chunks[-1].getbuffer(), 16)[0]
            end = self.bio.tell()
            self.bio.seek(chunk_start + 9 + 24)
            self.bio.write(struct.pack("<I", crc))
            self.bio.seek(end)

    class CrcWriter(Writer):
        STORAGE_PLUGINS = {**Writer.STORAGE_PLUGINS, StoragePlugin.MCAP: CrcMcapWriter}

    return CrcWriter


# ---------------------------------------------------------------- Bag


class Bag:
    """A rosbag2 bag (directory or bare .mcap/.db3 file), read as completely as it can be.

    ``topics``: topic -> message type; ``expected``: topic -> message count where the metadata
    or the index says so; after :meth:`messages`: ``delivered`` counts per topic, :meth:`lost`,
    ``notes`` (one line per problem), ``loss_reason`` (``truncated`` or ``corrupt``) and
    ``corrupt_chunks`` (MCAP chunks skipped because their CRC, size or records are wrong: their
    messages are counted as lost, never delivered).
    """

    def __init__(self, path: PathLike) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise BagError(f"bag {self.path} does not exist")
        self.notes: list[str] = []
        self.delivered: Counter[str] = Counter()
        self.loss_reason: Optional[str] = None
        self.corrupt_chunks = 0  # chunks skipped by the last messages(): bad CRC, size, records
        self.expected: dict[str, int] = {}
        self.topics: dict[str, str] = {}
        self._whole = False  # rosbags reads the whole bag
        self._meta = self._read_metadata()  # refuses hostile metadata before rosbags reads it
        try:
            from rosbags.rosbag2 import Reader

            with Reader(self.path) as reader:
                self.topics = {t: info.msgtype for t, info in reader.topics.items()
                               if info.msgtype}
                self.expected = {t: int(info.msgcount) for t, info in reader.topics.items()}
            self._whole = True
            return
        except Exception as exc:  # noqa: BLE001 - ReaderError, yaml, OSError, struct errors...
            why = f"{type(exc).__name__}: {str(exc)[:300]}"
        self.files = self._storage_files()
        if not self.files:
            raise BagError(f"{self.path} is not a rosbag2 bag: rosbags cannot open it ({why}) and "
                           "it holds no .mcap or .db3 storage file")
        self.notes.append(f"rosbags cannot open {self.path} ({why}); reading each storage file "
                          "record by record")
        self.expected = self._metadata_counts()
        for f in self.files:
            for topic, msgtype in self._file_topics(f).items():
                self.topics.setdefault(topic, msgtype)

    # -- discovery -------------------------------------------------------------------------
    def _storage_files(self) -> list[Path]:
        if self.path.is_file():
            return [self.path] if self.path.suffix in (".mcap", ".db3") else []
        listed = []
        for name in (self._meta or {}).get("relative_file_paths") or []:
            p = self.path / Path(str(name)).name
            if p.is_file() and p.suffix in (".mcap", ".db3"):
                listed.append(p)
        return listed or sorted(p for p in self.path.iterdir()
                                if p.is_file() and p.suffix in (".mcap", ".db3"))

    def _read_metadata(self) -> Optional[dict]:
        """The ``rosbag2_bagfile_information`` of a bag directory's metadata.yaml, read with
        limits (:data:`MAX_METADATA_BYTES`, no aliases, bounded nesting) and its file list
        checked; a BagError for a hostile file, None for a missing or merely damaged one (the
        storage files still hold the messages)."""
        meta = self.path / "metadata.yaml" if self.path.is_dir() else None
        if meta is None or not (meta.exists() or meta.is_symlink()):
            return None
        try:
            data = read_yaml_file(meta, MAX_METADATA_BYTES, "bag metadata")
        except YamlSyntaxError as exc:
            self.notes.append(str(exc))
            return None
        except YamlLimitError as exc:
            raise BagError(f"{exc}; refusing to read the bag") from None
        except OSError as exc:
            self.notes.append(f"cannot read {meta}: {exc.strerror}")
            return None
        info = data.get("rosbag2_bagfile_information") if isinstance(data, dict) else None
        if not isinstance(info, dict):
            return None
        names = info.get("relative_file_paths")
        if not isinstance(names, list):
            info["relative_file_paths"] = []
            names = []
        for name in names:
            if not isinstance(name, str) or Path(name).is_absolute() or ".." in Path(name).parts:
                raise BagError(f"bag metadata {meta}: storage file {str(name)[:200]!r} is not "
                               "inside the bag directory; refusing to read the bag")
        return info

    def _metadata_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        entries = (self._meta or {}).get("topics_with_message_count")
        for entry in entries if isinstance(entries, list) else []:
            try:
                counts[str(entry["topic_metadata"]["name"])] = int(entry["message_count"])
            except (KeyError, TypeError, ValueError):
                continue
        return counts

    def _file_topics(self, f: Path) -> dict[str, str]:
        try:
            from rosbags.rosbag2 import Reader

            with Reader(f) as reader:
                return {t: info.msgtype for t, info in reader.topics.items() if info.msgtype}
        except Exception:  # noqa: BLE001 - damaged: scan it
            pass
        if f.suffix != ".mcap":
            self.notes.append(f"{f.name}: unreadable sqlite3 storage file, skipped")
            return {}
        return McapScan(f).topics()

    # -- topics ----------------------------------------------------------------------------
    def describe_topics(self, limit: int = 20) -> str:
        """The topics and their types for an error line, at most ``limit`` of them."""
        if not self.topics:
            return "the bag has no readable topic"
        shown = [f"{t[:120]} ({ty[:80]})" for t, ty in sorted(self.topics.items())]
        more = f", ... ({len(shown) - limit} more)" if len(shown) > limit else ""
        return ", ".join(shown[:limit]) + more

    def image_topics(self) -> list[str]:
        return sorted(t for t, ty in self.topics.items() if ty in IMAGE_MSGTYPES)

    def require_topic(self, topic: str, types: Iterable[str] = IMAGE_MSGTYPES,
                      what: str = "topic") -> str:
        """``topic`` when the bag has it with one of ``types``; else a BagError naming the
        topics that exist."""
        types = tuple(types)
        if topic not in self.topics:
            raise BagError(f"{what} {topic} is not in bag {self.path}; topics: "
                           f"{self.describe_topics()}")
        if self.topics[topic] not in types:
            raise BagError(f"{what} {topic} in bag {self.path} has type {self.topics[topic]}, "
                           f"expected {' or '.join(types)}; topics: {self.describe_topics()}")
        return topic

    def pick_image_topic(self, topic: Optional[str] = None, exclude: Iterable[str] = (),
                         how_to_choose: str = "choose one with the topic option") -> str:
        """``topic`` if given (checked), else the only camera topic: an image topic not in
        ``exclude`` whose name does not say it holds labels, masks, depth or detector output
        (:func:`not_a_camera`). Why by rule: a bag whose camera topic has an unknown or damaged
        type still has its mono8 ground-truth Image topic, and taking that as the camera would
        score labels as if they were frames."""
        if topic is not None:
            return self.require_topic(topic, what="image topic")
        excluded = set(exclude)
        images = [t for t in self.image_topics() if t not in excluded]
        candidates = [t for t in images if not_a_camera(t) is None]
        if len(candidates) == 1:
            return candidates[0]
        if not candidates:
            set_aside = "".join(f"; {t[:120]} is not taken as the camera: {not_a_camera(t)}"
                                for t in images[:5])
            raise BagError(f"bag {self.path} has no image topic "
                           f"({' or '.join(IMAGE_MSGTYPES)}) to read as the camera{set_aside}; topics: "
                           f"{self.describe_topics()}; {how_to_choose}")
        raise BagError(f"bag {self.path} has {len(candidates)} image topics "
                       f"({', '.join(candidates)}); {how_to_choose}")

    # -- messages --------------------------------------------------------------------------
    def messages(self, topics: Iterable[str]) -> Iterator[BagMessage]:
        """Every readable message of ``topics``: time ordered when rosbags reads the bag, in
        file order when it is salvaged. Resets ``delivered``."""
        want = set(topics)
        self.delivered = Counter()
        self.loss_reason = None
        self.corrupt_chunks = 0
        done: Counter[tuple[str, int]] = Counter()  # (topic, log time) delivered by rosbags
        if self._whole:
            from rosbags.rosbag2 import Reader

            try:
                with Reader(self.path) as reader:
                    conns = [c for c in reader.connections if c.topic in want]
                    for conn, t, raw in reader.messages(connections=conns):
                        done[(conn.topic, t)] += 1
                        self.delivered[conn.topic] += 1
                        yield BagMessage(conn.topic, conn.msgtype, int(t), raw)
                return
            except Exception as exc:  # noqa: BLE001 - a damaged chunk mid-way
                self.notes.append(f"rosbags stopped reading {self.path} after "
                                  f"{sum(self.delivered.values())} messages "
                                  f"({type(exc).__name__}: {str(exc)[:300]}); salvaging the rest")
                self.files = self._storage_files()
                if not self.expected:
                    self.expected = self._metadata_counts()
        for f in self.files:
            for msg in self._file_messages(f, want):
                key = (msg.topic, msg.log_time_ns)
                if done[key]:  # already delivered before rosbags failed
                    done[key] -= 1
                    continue
                self.delivered[msg.topic] += 1
                yield msg

    def _file_messages(self, f: Path, want: set[str]) -> Iterator[BagMessage]:
        from rosbags.rosbag2 import Reader

        if f.suffix == ".db3":
            try:
                with Reader(f) as reader:
                    conns = [c for c in reader.connections if c.topic in want]
                    for conn, t, raw in reader.messages(connections=conns):
                        yield BagMessage(conn.topic, conn.msgtype, int(t), raw)
            except Exception as exc:  # noqa: BLE001
                self.loss_reason = self.loss_reason or "corrupt"
                self.notes.append(f"{f.name}: sqlite3 storage unreadable from here on "
                                  f"({type(exc).__name__}: {exc})")
            return
        scan = McapScan(f)
        for topic, msgtype, t, raw in scan.messages(want):
            yield BagMessage(topic, msgtype, t, raw)
        self.notes.extend(scan.problems)
        self.corrupt_chunks += scan.corrupt_chunks
        if scan.truncated:
            self.loss_reason = "truncated"
        elif scan.corrupt_chunks:
            self.loss_reason = self.loss_reason or "corrupt"

    def lost(self, topic: str) -> Optional[int]:
        """Messages of ``topic`` that the metadata announces but the last :meth:`messages`
        could not deliver (None: unknown, the bag has no usable metadata)."""
        if topic not in self.expected:
            return None
        return max(0, self.expected[topic] - self.delivered[topic])

