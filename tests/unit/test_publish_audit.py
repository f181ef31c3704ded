"""No live version without its audit record: the publication entry is written before
``current`` switches, and a version whose record cannot be written never goes live."""

from __future__ import annotations

import errno

import pytest

from govlake import audit
from govlake.audit import AuditError
from govlake.publish import publish
from test_publish import PRODUCT, gate_ok, make_candidate, publish_tag


def _publish(lake, tag, hook):
    run_id = f"20261130T1015{tag:02d}-aud"
    cand = make_candidate(lake, run_id, tag)
    return publish(lake, PRODUCT, cand, run_id=run_id, gate_result=gate_ok(lake, run_id, cand, 50 * tag),
                   inputs=[{"batch_id": f"b{tag}", "file": "x.csv", "sha256": "0" * 64}], renditions=False,
                   before_switch=hook)


def test_record_is_durable_before_current_switches(lake):
    seen = {}

    def hook(record):
        seen["current_before"] = lake.current_version(PRODUCT)
        seen["entry"] = audit.record_publication(lake, record, sign=False)

    pub = _publish(lake, 1, hook)
    assert seen["current_before"] is None and lake.current_version(PRODUCT) == int(pub) == 1
    assert seen["entry"]["payload"]["version"] == 1 and audit.verify(lake).ok


def test_a_version_whose_record_fails_is_never_live(lake, monkeypatch):
    publish_tag(lake, 1)  # v=1 is current
    real = audit._write_all

    def full_disk(fd, data):  # the log's write fails: ENOSPC
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(audit, "_write_all", full_disk)
    with pytest.raises(AuditError):
        _publish(lake, 2, lambda record: audit.record_publication(lake, record, sign=False))
    monkeypatch.setattr(audit, "_write_all", real)
    assert lake.current_version(PRODUCT) == 1 and lake.versions(PRODUCT) == [1]  # v=2 removed, not live
    assert audit.verify(lake).ok  # nothing torn
    # space is back: the next publication works and is recorded
    pub = _publish(lake, 3, lambda record: audit.record_publication(lake, record, sign=False))
    assert lake.current_version(PRODUCT) == int(pub) == 2
    assert [e["payload"]["version"] for e in audit.entries(lake) if e["kind"] == "publication"] == [2]
