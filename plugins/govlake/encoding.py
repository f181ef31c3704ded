"""Decode department deliveries the one safe way (docs/standards.md §8).

Strict ``utf-8-sig`` first, then strict ``gb18030``; anything else is rejected. Never
``gbk``/``gb2312``/``cp936``: they reject characters GB18030 encodes (䶮, 𠀀, 镕 …). UTF-8 must
be tried first because UTF-8 bytes can decode "successfully" as GB18030 into mojibake.

Detection streams the file in chunks, so a 2 GB delivery needs a few MB of memory. It can
write the decoded text as UTF-8 to a second file in the same pass (``transcode_to``), so a
GB18030 delivery is decoded once, not once to detect and again to parse.

A large file can be checked (and transcoded) by worker processes (``detect_file(pool=...)``):
it is cut into ranges that end just after a LF -- the byte 0x0A is never part of a multi-byte
UTF-8 or GB18030 character, so each range decodes on its own exactly as it does inside the whole
file -- decoded in parallel and written in file order. A failure is then located by the
sequential pass, so the message (byte offset, line) is the one the sequential path gives.
"""

from __future__ import annotations

import codecs
import collections
import contextlib
import os
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterable, Iterator

CANDIDATES = ("utf-8-sig", "gb18030")
_CHUNK = 4 << 20  # a failure's byte offset and line are computed per chunk of this size
_FAST_CHUNK = 1 << 20  # decode in smaller pieces (far fewer page faults); a failure is re-run at _CHUNK
RANGE_BYTES = 32 << 20  # a large file is decoded by worker processes in ranges of about this size


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


def line_ranges(path: Path | str, range_bytes: int) -> list[tuple[int, int]]:
    """``[start, end)`` byte ranges covering the file, each but the last ending just after the last
    LF before a multiple of ``range_bytes`` (a range with no LF in it is merged into the next)."""
    size = os.path.getsize(path)
    bounds = [0]
    window = 1 << 16
    with open(path, "rb") as fh:
        p = range_bytes
        while p < size:
            hi = p
            while hi > bounds[-1]:  # the last LF in [bounds[-1], p)
                lo = max(bounds[-1], hi - window)
                fh.seek(lo)
                i = fh.read(hi - lo).rfind(b"\n")
                if i >= 0:
                    bounds.append(lo + i + 1)
                    break
                hi = lo
            p += range_bytes
    if bounds[-1] != size:
        bounds.append(size)
    return list(zip(bounds, bounds[1:]))


def ordered_map(pool: Executor, fn: Callable, args: Iterable[tuple], inflight: int) -> Iterator[Any]:
    """``fn(*a)`` for each ``a`` run by ``pool``, results in the order of ``args``, at most
    ``inflight`` submitted and not yet consumed (memory stays bounded); stopping early cancels
    what has not started."""
    it = iter(args)
    pending: collections.deque = collections.deque()
    try:
        for a in it:
            pending.append(pool.submit(fn, *a))
            if len(pending) >= inflight:
                break
        while pending:
            result = pending.popleft().result()
            for a in it:
                pending.append(pool.submit(fn, *a))
                break
            yield result
    finally:
        for f in pending:
            f.cancel()


def _decode_range(path: str, start: int, end: int, encoding: str, out: str | None) -> bool:
    """Worker: strictly decode ``[start, end)`` (a range of whole lines), writing its text as
    UTF-8 to the file ``out`` if given (a file, not the pipe: no copy of it through the parent's
    memory); False if it does not decode."""
    with open(path, "rb") as fh:
        fh.seek(start)
        data = fh.read(end - start)
    codec = "utf-8" if encoding == "utf-8-sig" and start > 0 else encoding  # a BOM only at byte 0
    try:
        text = data.decode(codec, errors="strict")
    except UnicodeDecodeError:
        return False
    if out is not None:
        with open(out, "wb") as fh:
            fh.write(text.encode("utf-8"))
    return True


def _append_file(sink: BinaryIO, part: str) -> None:
    """Append the file ``part`` to ``sink`` (in the kernel where it can) and remove it."""
    sink.flush()
    with open(part, "rb") as src:
        n = os.fstat(src.fileno()).st_size
        while n > 0:
            k = os.copy_file_range(src.fileno(), sink.fileno(), n) if hasattr(os, "copy_file_range") else 0
            if k <= 0:  # not supported here: an ordinary copy of the rest
                sink.write(src.read())
                break
            n -= k
    os.unlink(part)


def _detect_parallel(path: Path, transcode_to: Path | str | None, pool: Executor, inflight: int) -> str:
    ranges = line_ranges(path, RANGE_BYTES)
    failed = []
    for enc in CANDIDATES:
        transcode = transcode_to is not None and enc != "utf-8-sig"
        ok = True
        with contextlib.ExitStack() as stack:
            sink = stack.enter_context(open(transcode_to, "wb")) if transcode else None
            parts = [f"{transcode_to}.part{i}" if transcode else None for i in range(len(ranges))]
            results = stack.enter_context(contextlib.closing(ordered_map(
                pool, _decode_range, [(str(path), s, e, enc, o) for (s, e), o in zip(ranges, parts)], inflight)))
            for r, part in zip(results, parts):
                if r is False:
                    ok = False
                    break
                if sink is not None:
                    _append_file(sink, part)
        if ok:
            return enc
        if transcode:
            os.unlink(transcode_to)
        failed.append(enc)
    # located by the sequential pass, exactly as the sequential path reports it
    raise UndecodableError(path, [_try_stream(path, e) for e in failed])


def detect_file(path: Path | str, transcode_to: Path | str | None = None, pool: Executor | None = None,
                inflight: int = 4) -> str:
    """Return the codec name that strictly decodes the whole file, else raise UndecodableError.

    With ``transcode_to``: if the codec found is not UTF-8 (``utf-8-sig``), the decoded text is
    also written there as UTF-8 (no BOM added or removed, line ends untouched: the text exactly
    as ``path.read_bytes().decode(codec)`` returns it) during the same pass; for a UTF-8 file nothing is written (the file
    itself is UTF-8) and on failure no file is left behind. ``pool``: decode ranges of the file
    in these worker processes (see the module docstring; same result, same failure message),
    at most ``inflight`` ranges at a time; their UTF-8 text goes through files
    ``<transcode_to>.partN``, which the caller removes if an exception leaves any behind."""
    path = Path(path)
    if pool is not None:
        return _detect_parallel(path, transcode_to, pool, inflight)
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
