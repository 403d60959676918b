"""rosbag2 logs as data: robust image reading for `flowclas-ros replay`, and the `rosbag2` layout.

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

Frames are decoded with the node's own functions (:mod:`flowclas_ros.runtime.pipeline`), so a
frame read from a log is the array the node would have seen.

Training on logs: the ``rosbag2`` layout (:func:`rosbag2_layout`, registered in
:data:`~flowclas_ros.data.layouts.LAYOUTS`) takes ``topic`` (default: the bag's only image topic)
and ``stride`` (every n-th message of the topic). It extracts the selected frames ONCE into a
cache of lossless PNGs and returns ordinary generic-layout :class:`Sample` s (unlabelled: inlier
frames for training). Why a cache: every consumer of samples (trainer, calibration, export
parity check, evaluator) reads frames by path with random access, which an MCAP log cannot give
cheaply (a random frame costs a chunk read and decompression); the cache makes epochs after the
first free and keeps the rest of the pipeline unchanged. The cache key is the bag's resolved
path, the name, size and mtime of each of its files, the topic and the stride, so a re-recorded
or edited bag is extracted again. Location: ``$XDG_CACHE_HOME/flowclas_ros/bags`` (default
``~/.cache/flowclas_ros/bags``); entries are written to a temporary directory and renamed into
place, so an interrupted extraction never leaves a half cache and concurrent ranks do not clash.
"""
from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import shutil
import struct
import sys
import zlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Iterable, Iterator, Optional

import numpy as np

from ..runtime.pipeline import stamp_ns  # noqa: F401  (re-exported for replay)
from .layouts import LAYOUTS, DatasetError, PathLike, Sample, generic_layout, write_png

__all__ = [
    "COMPRESSED_IMAGE",
    "IMAGE",
    "IMAGE_MSGTYPES",
    "Bag",
    "BagError",
    "BagMessage",
    "FrameError",
    "bag_cache_root",
    "decode_frame",
    "deserialize",
    "extract_frames",
    "rosbag2_layout",
    "stamp_ns",
    "typestore",
]

log = logging.getLogger(__name__)

IMAGE = "sensor_msgs/msg/Image"
COMPRESSED_IMAGE = "sensor_msgs/msg/CompressedImage"
IMAGE_MSGTYPES: tuple[str, ...] = (IMAGE, COMPRESSED_IMAGE)
CACHE_VERSION = 1  # bump when the extraction changes what a cached frame holds


class BagError(DatasetError):
    """A bag, a topic in it, or an output bag path the user has to fix; the message says how."""


class FrameError(ValueError):
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
    """CDR -> message object, or :class:`FrameError` ``deserialize_error``."""
    try:
        return typestore().deserialize_cdr(message.raw, message.msgtype)
    except Exception as exc:  # noqa: BLE001 - rosbags raises SerdeError, struct/Index/Value errors
        raise FrameError("deserialize_error", f"{message.topic} message at {message.log_time_ns} "
                         f"does not deserialize as {message.msgtype}: {exc}") from exc


def decode_frame(msgtype: str, msg: Any) -> np.ndarray:
    """An Image or CompressedImage message -> HxWx3 RGB, exactly as the node decodes it
    (:class:`~flowclas_ros.runtime.images.ImageError` on a bad frame)."""
    from ..runtime.pipeline import decode_compressed_frame, decode_image_fields

    if msgtype == COMPRESSED_IMAGE:
        return decode_compressed_frame(msg.data, msg.format)
    return decode_image_fields(msg.data, msg.height, msg.width, msg.encoding, msg.step,
                               bool(msg.is_bigendian))


# ---------------------------------------------------------------- MCAP salvage scan

_MCAP_MAGIC = b"\x89MCAP0\r\n"
_OP_SCHEMA, _OP_CHANNEL, _OP_MESSAGE, _OP_CHUNK = 0x03, 0x04, 0x05, 0x06
_OP_FOOTER, _OP_DATA_END = 0x02, 0x0F


def _decompress(data: bytes, compression: str, size: int) -> bytes:
    if compression == "":
        return data
    if compression == "zstd":
        if sys.version_info >= (3, 14):
            from compression import zstd
        else:
            from backports import zstd  # a rosbags dependency
        return zstd.decompress(data)
    if compression == "lz4":
        from lz4.frame import decompress  # a rosbags dependency

        return decompress(data)
    raise ValueError(f"unsupported chunk compression {compression!r}")


class _McapScan:
    """Record-by-record reader of one MCAP file that survives truncation and corrupt chunks.

    Follows the MCAP spec (records: opcode u8, length u64, content), needs no footer, summary or
    index, and yields complete messages in file order. After a scan: ``truncated`` (the file
    ends inside a record or without a footer), ``corrupt_chunks``, ``problems`` (one line each).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.schemas: dict[int, str] = {}
        self.channels: dict[int, tuple[str, str]] = {}  # id -> (topic, msgtype)
        self.truncated = False
        self.corrupt_chunks = 0
        self.partial_messages = 0  # message records cut by the end of the file
        self.undeclared = 0  # messages on a channel that was never declared (lost with it)
        self.problems: list[str] = []

    def topics(self) -> dict[str, str]:
        for _ in self.messages(want=None, payload=False):
            pass
        return {topic: msgtype for topic, msgtype in self.channels.values()}

    def messages(self, want: Optional[set[str]], payload: bool = True
                 ) -> Iterator[tuple[str, str, int, bytes]]:
        """(topic, msgtype, log time, CDR) of the complete messages of topics in ``want``
        (None: all), in file order."""
        self.truncated, self.corrupt_chunks, self.partial_messages = False, 0, 0
        self.undeclared, self.problems = 0, []
        with open(self.path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if f.read(8) != _MCAP_MAGIC:
                self.problems.append(f"{self.path.name}: not an MCAP file (bad magic)")
                self.truncated = True
                return
            yield from self._top_level(f, size, want, payload)
        if self.undeclared:
            self.problems.append(f"{self.path.name}: {self.undeclared} messages on undeclared "
                                 "channels skipped")

    def _top_level(self, f: BinaryIO, size: int, want: Optional[set[str]], payload: bool
                   ) -> Iterator[tuple[str, str, int, bytes]]:
        while True:
            pos = f.tell()
            head = f.read(9)
            if len(head) < 9:
                self._cut(pos, size, "the file ends without its footer" if not head
                          else "cut inside a record header")
                return
            op, length = head[0], struct.unpack_from("<Q", head, 1)[0]
            if op in (_OP_DATA_END, _OP_FOOTER):
                return
            available = size - f.tell()
            body = f.read(min(length, available))
            if length > available:
                if op == _OP_CHUNK:
                    yield from self._chunk(body, want, payload, partial=True)
                elif op == _OP_MESSAGE:
                    self.partial_messages += 1
                self._cut(pos, size, f"cut inside a record of {length} bytes")
                return
            if op == _OP_CHUNK:
                yield from self._chunk(body, want, payload, partial=False)
                continue
            try:
                yield from self._record(op, body, want, payload)
            except (struct.error, UnicodeDecodeError):  # its length is intact: go on after it
                self.problems.append(f"{self.path.name}: unreadable record at byte {pos} skipped")

    def _cut(self, pos: int, size: int, what: str) -> None:
        self.truncated = True
        self.problems.append(f"{self.path.name}: truncated at byte {pos} of {size} ({what}); "
                             "the messages after it are lost")

    def _record(self, op: int, body: bytes | memoryview, want: Optional[set[str]], payload: bool
                ) -> Iterator[tuple[str, str, int, bytes]]:
        if op == _OP_SCHEMA:
            sid, name, _ = self._u16(body, 0), *self._string(body, 2)
            self.schemas[sid] = name
        elif op == _OP_CHANNEL:
            cid, sid = self._u16(body, 0), self._u16(body, 2)
            topic, _ = self._string(body, 4)
            self.channels[cid] = (topic, self.schemas.get(sid, ""))
        elif op == _OP_MESSAGE:
            cid = self._u16(body, 0)
            log_time = struct.unpack_from("<Q", body, 6)[0]
            topic, msgtype = self.channels.get(cid, ("", ""))
            if not topic:
                self.undeclared += 1
            elif want is None or topic in want:
                yield topic, msgtype, int(log_time), (bytes(body[22:]) if payload else b"")

    def _chunk(self, body: bytes, want: Optional[set[str]], payload: bool, partial: bool
               ) -> Iterator[tuple[str, str, int, bytes]]:
        try:
            usize, crc = struct.unpack_from("<QI", body, 16)
            compression, at = self._string(body, 28)
            (clen,) = struct.unpack_from("<Q", body, at)
        except (struct.error, UnicodeDecodeError):
            if not partial:
                self._corrupt("unreadable chunk header")
            return
        data = body[at + 8:at + 8 + clen]
        if len(data) < clen:  # cut by the end of the file, or a corrupt length
            if not partial:
                self._corrupt("chunk shorter than its length")
                return
            if compression != "":
                return  # a cut compressed chunk cannot be decoded: its messages are lost
            records = memoryview(data)  # a cut uncompressed chunk keeps its complete records
        else:
            try:
                raw = _decompress(bytes(data), compression, usize)
            except Exception as exc:  # noqa: BLE001 - zstd/lz4 raise their own error types
                self._corrupt(f"chunk does not decompress ({exc})")
                return
            if len(raw) != usize or (crc and zlib.crc32(raw) != crc):
                self._corrupt("chunk checksum or size mismatch")
                return
            records = memoryview(raw)
        pos = 0
        while pos + 9 <= len(records):
            op, length = records[pos], struct.unpack_from("<Q", records, pos + 1)[0]
            end = pos + 9 + length
            if end > len(records):
                if partial:
                    self.partial_messages += op == _OP_MESSAGE
                else:
                    self._corrupt("record overruns its chunk")
                return
            try:
                yield from self._record(op, records[pos + 9:end], want, payload)
            except (struct.error, UnicodeDecodeError):
                self._corrupt("unreadable record in chunk")
                return
            pos = end

    def _corrupt(self, why: str) -> None:
        self.corrupt_chunks += 1
        self.problems.append(f"{self.path.name}: corrupt chunk skipped: {why}")

    @staticmethod
    def _u16(buf: bytes | memoryview, at: int) -> int:
        return struct.unpack_from("<H", buf, at)[0]

    @staticmethod
    def _string(buf: bytes | memoryview, at: int) -> tuple[str, int]:
        (n,) = struct.unpack_from("<I", buf, at)
        if at + 4 + n > len(buf):
            raise struct.error("string overruns its record")
        return bytes(buf[at + 4:at + 4 + n]).decode(), at + 4 + n


# ---------------------------------------------------------------- Bag


class Bag:
    """A rosbag2 bag (directory or bare .mcap/.db3 file), read as completely as it can be.

    ``topics``: topic -> message type; ``expected``: topic -> message count where the metadata
    or the index says so; after :meth:`messages`: ``delivered`` counts per topic, :meth:`lost`,
    ``notes`` (one line per problem) and ``loss_reason`` (``truncated`` or ``corrupt``).
    """

    def __init__(self, path: PathLike) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise BagError(f"bag {self.path} does not exist")
        self.notes: list[str] = []
        self.delivered: Counter[str] = Counter()
        self.loss_reason: Optional[str] = None
        self.expected: dict[str, int] = {}
        self.topics: dict[str, str] = {}
        self._whole = False  # rosbags reads the whole bag
        try:
            from rosbags.rosbag2 import Reader

            with Reader(self.path) as reader:
                self.topics = {t: info.msgtype for t, info in reader.topics.items()
                               if info.msgtype}
                self.expected = {t: int(info.msgcount) for t, info in reader.topics.items()}
            self._whole = True
            return
        except Exception as exc:  # noqa: BLE001 - ReaderError, yaml, OSError, struct errors...
            why = f"{type(exc).__name__}: {exc}"
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
        meta = self._metadata()
        for name in (meta or {}).get("relative_file_paths") or []:
            p = self.path / Path(str(name)).name
            if p.is_file() and p.suffix in (".mcap", ".db3"):
                listed.append(p)
        return listed or sorted(p for p in self.path.iterdir()
                                if p.is_file() and p.suffix in (".mcap", ".db3"))

    def _metadata(self) -> Optional[dict]:
        meta = self.path / "metadata.yaml" if self.path.is_dir() else None
        if meta is None or not meta.is_file():
            return None
        try:
            import yaml

            data = yaml.safe_load(meta.read_text())
            return data.get("rosbag2_bagfile_information") if isinstance(data, dict) else None
        except Exception:  # noqa: BLE001 - a damaged metadata file only loses the counts
            return None

    def _metadata_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for entry in (self._metadata() or {}).get("topics_with_message_count") or []:
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
        return _McapScan(f).topics()

    # -- topics ----------------------------------------------------------------------------
    def describe_topics(self) -> str:
        if not self.topics:
            return "the bag has no readable topic"
        return ", ".join(f"{t} ({ty})" for t, ty in sorted(self.topics.items()))

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
        """``topic`` if given (checked), else the only image topic not in ``exclude``."""
        if topic is not None:
            return self.require_topic(topic, what="image topic")
        excluded = set(exclude)
        candidates = [t for t in self.image_topics() if t not in excluded]
        if len(candidates) == 1:
            return candidates[0]
        if not candidates:
            raise BagError(f"bag {self.path} has no image topic ({' or '.join(IMAGE_MSGTYPES)}) "
                           f"to read; topics: {self.describe_topics()}")
        raise BagError(f"bag {self.path} has {len(candidates)} image topics "
                       f"({', '.join(candidates)}); {how_to_choose}")

    # -- messages --------------------------------------------------------------------------
    def messages(self, topics: Iterable[str]) -> Iterator[BagMessage]:
        """Every readable message of ``topics``: time ordered when rosbags reads the bag, in
        file order when it is salvaged. Resets ``delivered``."""
        want = set(topics)
        self.delivered = Counter()
        self.loss_reason = None
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
                                  f"({type(exc).__name__}: {exc}); salvaging the rest")
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
        scan = _McapScan(f)
        for topic, msgtype, t, raw in scan.messages(want):
            yield BagMessage(topic, msgtype, t, raw)
        self.notes.extend(scan.problems)
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


# ---------------------------------------------------------------- the rosbag2 layout


def bag_cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "flowclas_ros" / "bags"


def _cache_key(bag: Path, topic: str, stride: int) -> str:
    bag = bag.resolve()
    files = [bag] if bag.is_file() else sorted(p for p in bag.iterdir() if p.is_file())
    stats = [(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in files]
    blob = json.dumps({"v": CACHE_VERSION, "bag": str(bag), "files": stats, "topic": topic,
                       "stride": stride}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def extract_frames(bag: Bag, topic: str, stride: int, out: Path) -> dict:
    """Write every ``stride``-th message of ``topic`` as ``out/images/{n:07d}_{stamp}.png``
    (n: the message's index in the topic) and ``out/manifest.json``; returns the manifest.
    Frames that fail to deserialize or decode are skipped and counted by kind."""
    from ..runtime.images import ImageError

    skipped: Counter[str] = Counter()
    frames = 0
    for n, message in enumerate(bag.messages([topic])):
        if n % stride:
            continue
        try:
            msg = deserialize(message)
            rgb = decode_frame(message.msgtype, msg)
        except FrameError as exc:
            skipped[exc.kind] += 1
            continue
        except ImageError as exc:
            skipped[exc.kind] += 1
            continue
        write_png(out / "images" / f"{n:07d}_{stamp_ns(msg)}.png", rgb)
        frames += 1
    lost = bag.lost(topic)
    if lost:  # unread messages would have contributed every stride-th of them
        skipped[bag.loss_reason or "unreadable"] += -(-lost // stride)
    manifest = {"bag": str(bag.path.resolve()), "topic": topic, "stride": stride,
                "frames": frames, "messages": bag.delivered[topic], "skipped": dict(skipped),
                "notes": bag.notes}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def rosbag2_layout(root: PathLike, topic: Optional[str] = None, stride: int = 1,
                   require_labels: bool = False) -> list[Sample]:
    """The frames of a rosbag2 log as unlabelled samples (inlier frames for training).

    ``topic``: image topic (Image or CompressedImage; default the bag's only image topic);
    ``stride``: keep every n-th message. Frames are extracted once to :func:`bag_cache_root`.
    """
    if require_labels:
        raise DatasetError(f"the rosbag2 layout gives unlabelled frames ({root}); "
                           "label a bag with flowclas-ros replay --gt-topic instead")
    if isinstance(stride, bool) or not isinstance(stride, int) or stride < 1:
        raise DatasetError(f"rosbag2 layout: stride must be an integer >= 1, got {stride!r}")
    bag = Bag(root)
    topic = bag.pick_image_topic(topic, how_to_choose="choose one with the data source's "
                                 "`topic:` key")
    cache = bag_cache_root() / _cache_key(bag.path, topic, stride)
    if not (cache / "manifest.json").is_file():
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.parent / f".{cache.name}.{os.getpid()}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        log.info("extracting every %d-th frame of %s from %s to %s", stride, topic, bag.path, cache)
        try:
            manifest = extract_frames(bag, topic, stride, tmp)
            if manifest["frames"] == 0:
                raise DatasetError(f"no readable frame on {topic} in bag {bag.path} "
                                   f"(skipped: {manifest['skipped'] or 'none'}; "
                                   f"{'; '.join(bag.notes) or 'the topic is empty'})")
            try:
                tmp.rename(cache)
            except OSError:  # another process finished first: use its cache
                if not (cache / "manifest.json").is_file():
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        if manifest["skipped"]:
            log.warning("%s: %d frames of %s skipped %s; %s", bag.path,
                        sum(manifest["skipped"].values()), topic, manifest["skipped"],
                        "; ".join(manifest["notes"]))
    return generic_layout(cache)


LAYOUTS["rosbag2"] = rosbag2_layout
