"""Extraction recognises an already-read landing file without reading it again (the ledger's
landing_hashes cache), and still reads every file that may have changed: a new size, a new
modification time, a new inode (a file replaced by rename), or a file modified too close to
when it was hashed ("racy")."""

from __future__ import annotations

import os
import time

import pytest

from govlake import ingest, metadata
from govlake_synth import generate
from govlake.ledger import RACY_NS, Ledger
from lake_support import use_lake_root

DATE = "2026-11-20"
TAX = metadata.dataset("tax.taxpayer_registration")
HOUR = 3600


@pytest.fixture
def lake(tmp_path):
    with use_lake_root(tmp_path / "lake") as lake:
        generate.generate(lake, people=60, date=DATE, seed=3, progress=False)
        yield lake


def _landing(lake):
    return next(lake.landing(TAX.dept, TAX.name, DATE).glob(TAX.file_pattern))


def _age(path, seconds=HOUR):
    t = time.time_ns() - seconds * 1_000_000_000
    os.utime(path, ns=(t, t))


def _count_reads(monkeypatch):
    reads = []
    real = ingest.sha256_file

    def counting(path):
        reads.append(path.name)
        return real(path)

    monkeypatch.setattr(ingest, "sha256_file", counting)
    return reads


def test_unchanged_file_is_not_read_again(lake, monkeypatch):
    f = _landing(lake)
    _age(f)  # delivered an hour before this extraction
    reads = _count_reads(monkeypatch)
    first = ingest.extract_dataset(TAX, lake)
    assert reads == [f.name] and [r.status for r in first.files] == ["ingested"]
    second = ingest.extract_dataset(TAX, lake)
    assert reads == [f.name]  # not read again
    assert [(r.status, r.sha256) for r in second.files] == [("skipped", first.files[0].sha256)]
    assert first.files[0].sha256 == _sha(f)


def _sha(path):
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_file_modified_close_to_its_hashing_is_read_again(lake, monkeypatch):
    f = _landing(lake)
    os.utime(f)  # modified now: the first hashing follows within RACY_NS
    reads = _count_reads(monkeypatch)
    ingest.extract_dataset(TAX, lake)
    source_file = str(f.relative_to(lake.landing_root))
    assert Ledger(lake).cached_sha(source_file, f.stat()) is None
    ingest.extract_dataset(TAX, lake)
    assert reads == [f.name, f.name]
    # once hashed long enough after its last modification, the entry is trusted
    _age(f, seconds=2 * RACY_NS // 1_000_000_000)
    ingest.extract_dataset(TAX, lake)
    assert reads == [f.name, f.name, f.name]
    assert Ledger(lake).cached_sha(source_file, f.stat()) == _sha(f)
    ingest.extract_dataset(TAX, lake)
    assert reads == [f.name, f.name, f.name]


@pytest.mark.parametrize("how", ["same size, new inode, old mtime kept", "size changed"])
def test_replaced_file_is_read_and_ingested_as_a_correction(lake, monkeypatch, how):
    f = _landing(lake)
    _age(f)
    first = ingest.extract_dataset(TAX, lake)
    old = f.stat()
    data = f.read_bytes()
    # a corrected delivery: the first byte of the first data row (an ASCII code) changed, same
    # length; or a row added
    at = data.index(b"\n") + 1
    assert data[at:at + 1].isalnum()
    body = data[:at] + (b"X" if data[at:at + 1] != b"X" else b"Y") + data[at + 1:]
    if how == "size changed":
        body = data + data.splitlines(keepends=True)[-1]
    tmp = f.with_name(".new")
    tmp.write_bytes(body)
    os.replace(tmp, f)  # a new inode
    if how.startswith("same size"):
        assert f.stat().st_size == old.st_size
        os.utime(f, ns=(old.st_atime_ns, old.st_mtime_ns))
    reads = _count_reads(monkeypatch)
    second = ingest.extract_dataset(TAX, lake)
    assert reads == [f.name]
    assert [r.status for r in second.files] == ["ingested"]
    assert second.files[0].sha256 == _sha(f) != first.files[0].sha256
    assert second.files[0].supersedes == first.files[0].batch_id
