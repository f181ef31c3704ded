"""Decode department deliveries the one safe way (standards.md §8).

Strict ``utf-8-sig`` first, then strict ``gb18030``; anything else is rejected. Never
``gbk``/``gb2312``/``cp936``: they reject characters GB18030 encodes (䶮, 𠀀, 镕 …). UTF-8 must
be tried first because UTF-8 bytes can decode "successfully" as GB18030 into mojibake.

Detection streams the file in chunks, so a 2 GB delivery needs a few MB of memory.
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass
from pathlib import Path

CANDIDATES = ("utf-8-sig", "gb18030")
_CHUNK = 4 << 20


@dataclass(frozen=True)
class DecodeFailure:
    encoding: str
    byte_offset: int
    line: int  # 1-based physical line of the offending byte
    detail: str


class UndecodableError(ValueError):
    def __init__(self, path: Path | str, failures: list[DecodeFailure]):
        self.path = str(path)
        self.failures = failures
        best = max(failures, key=lambda f: f.byte_offset)
        self.line = best.line
        self.byte_offset = best.byte_offset
        tried = "; ".join(
            f"{f.encoding}: {f.detail} at byte {f.byte_offset} (line {f.line})" for f in failures
        )
        super().__init__(f"{path}: line {best.line}: rule encoding.undecodable: not valid UTF-8 or GB18030 ({tried})")


def _try_stream(path: Path, encoding: str) -> DecodeFailure | None:
    dec = codecs.getincrementaldecoder(encoding)(errors="strict")
    offset = 0
    newlines = 0
    with open(path, "rb") as fh:
        while True:
            chunk = fh.read(_CHUNK)
            final = not chunk
            try:
                dec.decode(chunk, final=final)
            except UnicodeDecodeError as e:
                # e.start is relative to the decoder's buffered input; approximate to the chunk
                pos = max(0, min(len(chunk), e.start))
                bad_at = offset + pos
                line = newlines + chunk[:pos].count(b"\n") + 1
                return DecodeFailure(encoding, bad_at, line, e.reason)
            if final:
                return None
            newlines += chunk.count(b"\n")
            offset += len(chunk)


def detect_file(path: Path | str) -> str:
    """Return the codec name that strictly decodes the whole file, else raise UndecodableError."""
    path = Path(path)
    failures = []
    for enc in CANDIDATES:
        fail = _try_stream(path, enc)
        if fail is None:
            return enc
        failures.append(fail)
    raise UndecodableError(path, failures)


def decode_bytes(data: bytes) -> tuple[str, str]:
    """Decode a small byte string with the same rule; returns (text, encoding)."""
    failures = []
    for enc in CANDIDATES:
        try:
            return data.decode(enc, errors="strict"), enc
        except UnicodeDecodeError as e:
            failures.append(DecodeFailure(enc, e.start, data[: e.start].count(b"\n") + 1, e.reason))
    raise UndecodableError("<bytes>", failures)
