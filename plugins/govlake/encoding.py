"""Decode department deliveries the one safe way (standards.md §8).

Strict ``utf-8-sig`` first, then strict ``gb18030``; anything else is rejected. Never
``gbk``/``gb2312``/``cp936``: they reject characters GB18030 encodes (䶮, 𠀀, 镕 …). UTF-8 must
be tried first because UTF-8 bytes can decode "successfully" as GB18030 into mojibake.

Detection streams the file in chunks, so a 2 GB delivery needs a few MB of memory. It can
write the decoded text as UTF-8 to a second file in the same pass (``transcode_to``), so a
GB18030 delivery is decoded once, not once to detect and again to parse.
"""

from __future__ import annotations

import codecs
import os
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

CANDIDATES = ("utf-8-sig", "gb18030")
_CHUNK = 4 << 20  # a failure's byte offset and line are computed per chunk of this size
_FAST_CHUNK = 1 << 20  # decode in smaller pieces (far fewer page faults); a failure is re-run at _CHUNK


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


def _try_stream(path: Path, encoding: str, sink: BinaryIO | None = None, size: int | None = None) -> DecodeFailure | None:
    """Decode the whole file strictly; the decoded text goes to ``sink`` as UTF-8 if given."""
    dec = codecs.getincrementaldecoder(encoding)(errors="strict")
    offset = 0
    newlines = 0
    with open(path, "rb") as fh:
        while True:
            chunk = fh.read(size or _CHUNK)
            final = not chunk
            try:
                text = dec.decode(chunk, final=final)
                if sink is not None and text:
                    sink.write(text.encode("utf-8"))
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


def detect_file(path: Path | str, transcode_to: Path | str | None = None) -> str:
    """Return the codec name that strictly decodes the whole file, else raise UndecodableError.

    With ``transcode_to``: if the codec found is not UTF-8 (``utf-8-sig``), the decoded text is
    also written there as UTF-8 (no BOM added or removed, line ends untouched: the text exactly
    as ``path.read_bytes().decode(codec)`` returns it) during the same pass; for a UTF-8 file nothing is written (the file
    itself is UTF-8) and on failure no file is left behind."""
    path = Path(path)
    failures = []
    for enc in CANDIDATES:
        if transcode_to is None or enc == "utf-8-sig":
            fail = _try_stream(path, enc, size=_FAST_CHUNK)
        else:
            with open(transcode_to, "wb") as sink:
                fail = _try_stream(path, enc, sink, size=_FAST_CHUNK)
            if fail is not None:
                os.unlink(transcode_to)
        if fail is None:
            return enc
        failures.append(fail)
    if _FAST_CHUNK != _CHUNK:  # each failure exactly as reported at the _CHUNK size
        failures = [_try_stream(path, f.encoding) for f in failures]
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
