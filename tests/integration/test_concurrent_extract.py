"""Two extractions of the same new file at once (a scheduled run and a manual one on two workers)
give one batch: the second waits for the first, then finds the batch in the ledger and skips the
file. Without the ingest lock both would write the batch's temporary folder at once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest

from govlake import metadata
from govlake.ledger import Ledger
from govlake.storage import Lake, exclusive_lock, sha256_file
from govlake_synth import generate

pytestmark = pytest.mark.integration
DATE = "2026-11-20"
FEED = "public_security.household_registration"
CHILD = """
import json, sys
from pathlib import Path
from govlake import ingest, metadata
from govlake.storage import Lake
ds = next(d for d in metadata.datasets() if d.id == sys.argv[2])
print(json.dumps(ingest.extract_dataset(ds, Lake(Path(sys.argv[1]))).summary()))
"""


def test_same_file_extracted_twice_at_once_gives_one_batch(tmp_path):
    lake = Lake(tmp_path / "lake").ensure()
    old = os.environ.get("GOVLAKE_LAKE_ROOT")
    os.environ["GOVLAKE_LAKE_ROOT"] = str(lake.root)
    try:
        generate.generate(lake, people=3000, date=DATE, seed=5, progress=False)
    finally:
        if old is None:
            os.environ.pop("GOVLAKE_LAKE_ROOT", None)
        else:
            os.environ["GOVLAKE_LAKE_ROOT"] = old
    ds = next(d for d in metadata.datasets() if d.id == FEED)
    (src,) = [p for p in lake.landing(ds.dept, ds.name, DATE).iterdir() if p.is_file()]
    sha = sha256_file(src)
    env = {**os.environ, "GOVLAKE_LAKE_ROOT": str(lake.root)}
    # both extractions are started while the file's ingest lock is held, so both reach it
    # before either has written anything; released, they run one after the other
    with exclusive_lock(lake.ingest_lock(ds.id, sha), timeout=5):
        procs = [subprocess.Popen([sys.executable, "-c", CHILD, str(lake.root), FEED], env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
        time.sleep(3)
        done = [p for p in procs if p.poll() is not None]
        assert not done, ("an extraction did not wait for the ingest lock", [p.communicate() for p in done])
        assert not Ledger(lake).all(ds.dept, ds.name), "a batch was recorded while the lock was held"
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-3000:]
        outs.append(json.loads(out.strip().splitlines()[-1]))
    assert sorted((o["ingested_files"], o["skipped"]) for o in outs) == [(0, 1), (1, 0)], outs
    entries = [e for e in Ledger(lake).all(ds.dept, ds.name) if e.sha256 == sha]
    assert [e.status for e in entries] == ["ingested"], entries
    batch = entries[0].batch_id
    raw = list(lake.raw_batch(ds.dept, ds.name, batch).glob("*.parquet"))
    n = duckdb.connect().execute("select count(*) from read_parquet(?)", [[str(f) for f in raw]]).fetchone()[0]
    delivered = sum(1 for _ in open(src, "rb")) - 1  # CSV lines minus the header
    assert n == entries[0].rows == delivered
    # nothing of the batch's temporary work is left behind
    assert not list(Path(lake.raw_batch(ds.dept, ds.name, batch)).parent.glob(".*.tmp"))
