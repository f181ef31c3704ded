"""Write-audit-publish: versions, immutability, atomic switch, locking, refusal of failed gates.

The gate verdicts here are constructed GateResult objects (the real GX gate is exercised in
tests/integration/test_gate.py); the files, locks and symlinks are real.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import threading
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from govlake.gate import FailedExpectation, GateFailed, GateResult
from govlake.publish import (MANIFEST, PublishError, Publication, product_lock, publish,
                             resolve_current, sha256_file)
from govlake.sharing import crypto
from govlake.storage import Lake
from lake_support import passed_gate

PRODUCT = "population_base"


def make_candidate(lake: Lake, run_id: str, version_tag: int, rows: int | None = None) -> Path:
    """A candidate file whose every row carries ``tag`` and whose row count depends on it."""
    rows = rows if rows is not None else 50 * version_tag
    d = lake.candidate(run_id)
    d.mkdir(parents=True, exist_ok=True)
    path = d / f"{PRODUCT}.parquet"
    table = pa.table({
        "id_number": [f"{i:017d}X" for i in range(rows)],
        "name": ["张三"] * rows,
        "tag": [version_tag] * rows,
    })
    pq.write_table(table, path)
    return path


def gate_ok(lake: Lake, run_id: str, candidate: Path, rows: int | None, success: bool = True,
            failed: list[FailedExpectation] | None = None) -> GateResult:
    gr = passed_gate(lake, run_id, PRODUCT, candidate, rows, success=success, failed=failed)
    gr.report_path.write_text("<html>report</html>", encoding="utf-8")
    return gr


def publish_tag(lake: Lake, tag: int, run_id: str | None = None) -> Publication:
    run_id = run_id or f"20261124T1015{tag:02d}-ab12cd"
    cand = make_candidate(lake, run_id, tag)
    return publish(lake, PRODUCT, cand, run_id=run_id, gate_result=gate_ok(lake, run_id, cand, 50 * tag),
                   inputs=[{"batch_id": f"b{tag}", "file": "x.csv", "sha256": "0" * 64}])


def test_versions_increase_and_manifest_describes_the_version(lake):
    p1 = publish_tag(lake, 1)
    p2 = publish_tag(lake, 2)
    assert (int(p1), int(p2)) == (1, 2)
    assert lake.versions(PRODUCT) == [1, 2]
    assert lake.current_version(PRODUCT) == 2
    m = lake.manifest(PRODUCT)
    assert m["product"] == PRODUCT and m["version"] == 2 and m["run_id"] == "20261124T101502-ab12cd"
    assert m["row_count"] == 100
    assert [c["name"] for c in m["columns"]] == ["id_number", "name", "tag"]
    data = lake.version_dir(PRODUCT, 2) / m["files"][0]["path"]
    assert m["files"][0]["sha256"] == sha256_file(data)
    assert m["inputs"] == [{"batch_id": "b2", "file": "x.csv", "sha256": "0" * 64}]
    assert m["gate"]["success"] is True and m["gate"]["suite"] == f"shared.{PRODUCT}"
    assert m["gate"]["report_path"].endswith("report.html")
    assert m["previous_version"] == 1
    # the publication record for the audit log
    rec = p2.record
    assert rec["event"] == "publish" and rec["version"] == 2 and rec["row_count"] == 100
    assert rec["manifest_sha256"] == __import__("hashlib").sha256(
        (lake.version_dir(PRODUCT, 2) / MANIFEST).read_bytes()).hexdigest()
    json.dumps(rec)  # serialisable as is
    # Chinese values round-trip
    assert pq.read_table(data, **crypto.arrow_read_options(data)).column("name")[0].as_py() == "张三"


def test_published_versions_are_immutable(lake):
    publish_tag(lake, 1)
    v1 = lake.version_dir(PRODUCT, 1)
    files = lambda: {str(p.relative_to(v1)): sha256_file(p) for p in v1.rglob("*") if p.is_file()}  # noqa: E731
    before = files()
    publish_tag(lake, 2)
    publish_tag(lake, 3)
    assert files() == before
    for p in v1.rglob("*"):  # the data, the manifest, renditions/ and each rendition
        assert not (p.stat().st_mode & 0o222), f"{p} is writable"
    # no staging leftovers
    assert not [p for p in lake.product_dir(PRODUCT).iterdir() if p.name.startswith(".")]


def test_refuses_to_overwrite_an_existing_version(lake, monkeypatch):
    publish_tag(lake, 1)
    import govlake.publish as pub

    monkeypatch.setattr(pub, "_next_version", lambda lake, product: 1)  # a buggy allocator
    with pytest.raises(PublishError, match="never overwritten"):
        publish_tag(lake, 2)
    assert lake.current_version(PRODUCT) == 1
    assert lake.manifest(PRODUCT, 1)["row_count"] == 50


def test_failed_gate_does_not_publish_and_keeps_current_candidate_report(lake):
    publish_tag(lake, 1)
    run_id = "20261124T111111-bad000"
    cand = make_candidate(lake, run_id, 2)
    bad = FailedExpectation(type="expect_column_values_to_be_unique", column="id_number",
                            kwargs={"column": "id_number"}, unexpected_count=2,
                            examples=["00000000000000001X"])
    g = gate_ok(lake, run_id, cand, 100, success=False, failed=[bad])
    with pytest.raises(GateFailed) as ei:
        publish(lake, PRODUCT, cand, run_id=run_id, gate_result=g, inputs=[])
    msg = str(ei.value)
    assert PRODUCT in msg and f"shared.{PRODUCT}" in msg
    assert "expect_column_values_to_be_unique(id_number)" in msg
    assert lake.current_version(PRODUCT) == 1 and lake.versions(PRODUCT) == [1]
    assert cand.is_file() and g.report_path.is_file()


def test_refuses_ungated_or_other_file(lake):
    run_id = "20261124T120000-aaaaaa"
    cand = make_candidate(lake, run_id, 1)
    with pytest.raises(PublishError, match="no gate result"):
        publish(lake, PRODUCT, cand, run_id=run_id, gate_result=None, inputs=[])
    other = cand.with_name("other.parquet")
    other.write_bytes(cand.read_bytes())
    with pytest.raises(PublishError, match="validated"):
        publish(lake, PRODUCT, other, run_id=run_id, gate_result=gate_ok(lake, run_id, cand, 50),
                inputs=[])
    # a candidate that changed after its gate (row count differs)
    with pytest.raises(PublishError, match="changed after the gate"):
        publish(lake, PRODUCT, cand, run_id=run_id, gate_result=gate_ok(lake, run_id, cand, 49),
                inputs=[])
    assert lake.versions(PRODUCT) == [] and lake.current_version(PRODUCT) is None


def test_reader_sees_old_or_new_never_a_mix(lake):
    publish_tag(lake, 1)
    stop = threading.Event()
    errors: list[str] = []
    seen: set[int] = set()
    reads = 0

    def reader():
        nonlocal reads
        while not stop.is_set():
            try:
                vdir = resolve_current(lake, PRODUCT)
                manifest = json.loads((vdir / MANIFEST).read_text(encoding="utf-8"))
                f = manifest["files"][0]
                data = vdir / f["path"]
                table = pq.read_table(data, **crypto.arrow_read_options(data))
                tags = set(table.column("tag").to_pylist())
                v = manifest["version"]
                if vdir.name != f"v={v}" or tags != {v} or table.num_rows != manifest["row_count"] \
                        or sha256_file(data) != f["sha256"]:
                    errors.append(f"mixed read: dir {vdir.name}, manifest v{v}, tags {tags}, "
                                  f"rows {table.num_rows}/{manifest['row_count']}")
                seen.add(v)
                reads += 1
            except Exception as e:  # a missing `current` or half-written file is a failure
                errors.append(f"{type(e).__name__}: {e}")

    threads = [threading.Thread(target=reader) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        for tag in range(2, 7):
            publish_tag(lake, tag)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert errors == []
    assert reads > 0 and seen <= set(range(1, 7))
    assert lake.current_version(PRODUCT) == 6


def _publisher(root: str, worker: int, n: int, q) -> None:
    lake = Lake(Path(root))
    out = []
    for i in range(n):
        run_id = f"20261124T13{worker:02d}{i:02d}-cc{worker:04d}"
        cand = make_candidate(lake, run_id, 1, rows=10 + worker)
        out.append(int(publish(lake, PRODUCT, cand, run_id=run_id,
                               gate_result=gate_ok(lake, run_id, cand, 10 + worker), inputs=[])))
    q.put((worker, out))


def test_concurrent_publishers_never_share_a_version(lake):
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    procs = [ctx.Process(target=_publisher, args=(str(lake.root), w, 4, q)) for w in range(3)]
    for p in procs:
        p.start()
    results = [q.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    versions = sorted(v for _, vs in results for v in vs)
    assert versions == list(range(1, 13))
    assert lake.versions(PRODUCT) == list(range(1, 13))
    assert lake.current_version(PRODUCT) == 12
    for v in versions:
        m = lake.manifest(PRODUCT, v)
        assert m["version"] == v
        worker = [w for w, vs in results if v in vs][0]
        assert m["row_count"] == 10 + worker


def test_lock_is_exclusive(lake):
    with product_lock(lake, PRODUCT):
        with pytest.raises(PublishError, match="another publisher"):
            with product_lock(lake, PRODUCT, timeout=0.2):
                pass
    with product_lock(lake, PRODUCT, timeout=0.2):  # released again
        pass
