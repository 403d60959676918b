"""A record-by-record MCAP reader that survives what robots do to logs: power cuts and bad disks.

Why it exists: ``rosbags`` cannot open an MCAP file that was cut short (no footer, no summary) and
stops at a corrupt chunk. This scan follows the MCAP spec (records: opcode u8, length u64,
content), needs no footer, summary or index, keeps every complete message, skips a chunk whose
checksum or compression is broken, and stops at the cut. :class:`flowclas_ros.data.rosbag.Bag`
falls back to it file by file.
"""
from __future__ import annotations

import os
import struct
import sys
import zlib
from pathlib import Path
from typing import BinaryIO, Iterator, Optional

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


class McapScan:
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


