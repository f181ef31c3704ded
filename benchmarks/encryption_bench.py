"""Cost of encryption at rest (docs/adr/0014-encryption-at-rest.md): publish and serve.

    .venv/bin/python benchmarks/encryption_bench.py --rows 1000000

A synthetic ``population_base`` of ``--rows`` people (benchmarks/renditions_bench.py) is
published twice into a throw-away lake — ``encrypt=False`` then ``encrypt=True`` — with the
renditions the reviewed grants need (a throw-away token key and keyring); wall and CPU seconds
of each publish (data file + renditions). Then, on each data file, the service's reads are
timed (median of ``--repeat``, a 1-thread connection as app.py's ``svc.cursor()``, the SQL
from ``crypto.read_parquet_sql`` — DuckDB's reader for the plain file, the registered
pyarrow dataset for the encrypted one): a lookup (``SELECT name, phone, address … WHERE
id_number = ?``), ``count(*)``, and a group-by (``division_code, marital_status_code`` with
count and min(birth_date)); and the same three on the plain file read through the pyarrow
dataset (``plain_via_dataset``: the cost of the Arrow path without decryption). Also: whether
DuckDB's own reader opens the encrypted file (``duckdb_reader_on_encrypted``), a full
pyarrow read, and the service's fast path on each file (``fastpath_*``: key-sorted copy build,
lookup without its row-group cache). Prints one JSON document.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=15)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="enc-bench-"))
    os.environ["GOVLAKE_LAKE_ROOT"] = str(tmp / "lake")
    os.environ["GOVLAKE_PARQUET_KEYRING"] = str(tmp / "secrets" / "parquet-keys.json")
    os.environ.setdefault("GOVLAKE_TOKEN_KEY", os.urandom(32).hex())
    import duckdb

    from govlake.gate import GateResult, SuiteResult
    from govlake.publish import publish
    from govlake.sharing import crypto
    from govlake.storage import Lake
    from renditions_bench import synthetic_population

    from govlake.sharing import renditions

    renditions._tables()  # one-time character tables: not charged to the first publish
    lake = Lake(tmp / "lake").ensure()
    table = synthetic_population(args.rows)
    out: dict = {"rows": args.rows}
    files = {}
    for mode, enc in (("plain", False), ("encrypted", True)):
        run_id = f"20261201T00000{int(enc)}-bench0"
        cand = lake.candidate(run_id) / "population_base.parquet"
        cand.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, cand, compression="zstd", row_group_size=122_880)
        rep = lake.report_dir(run_id, "shared")
        rep.mkdir(parents=True, exist_ok=True)
        sr = SuiteResult(model="population_base", suite="shared.population_base", success=True, evaluated=1,
                         failed=[], table=str(cand), row_count=table.num_rows)
        gr = GateResult(layer="shared", run_id=run_id, success=True, suite_results={"population_base": sr},
                        report_path=rep / "r.html", docs_path=rep / "d" / "index.html",
                        json_path=rep / "v.json", seconds=0.0)
        t0, c0 = time.perf_counter(), time.process_time()
        v = publish(lake, "population_base", cand, run_id=run_id, gate_result=gr, inputs=[], encrypt=enc)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        m = lake.manifest("population_base", v)
        files[mode] = lake.version_dir("population_base", v) / "population_base.parquet"
        out[f"publish_{mode}"] = {"wall_s": round(wall, 2), "cpu_s": round(cpu, 2),
                                  "renditions": len(m.get("renditions", [])),
                                  "data_bytes": m["files"][0]["bytes"]}
    # serving: the service's DuckDB reads (a per-thread connection, 1 thread, as app.py)
    ids = table.column("id_number").to_pylist()
    probes = [ids[(i * 7919) % len(ids)] for i in range(args.repeat)]
    group_sql = ("SELECT division_code, marital_status_code, count(*), min(birth_date) FROM {s} "
                 "GROUP BY 1, 2 ORDER BY 1, 2")
    answers = {}

    def serve(mode, f, source):
        con = duckdb.connect(":memory:", config={"threads": 1, "memory_limit": "256MB"})
        lk, ct, gb = [], [], []
        for key in probes:
            t0 = time.perf_counter()
            rows = con.execute(f"SELECT name, phone, address FROM {source(f, con)} WHERE id_number = ?",
                               [key]).fetchall()
            lk.append(time.perf_counter() - t0)
            assert rows, "lookup found nothing"
            t0 = time.perf_counter()
            n = con.execute(f"SELECT count(*) FROM {source(f, con)}").fetchall()[0][0]
            ct.append(time.perf_counter() - t0)
            assert n == args.rows
            t0 = time.perf_counter()
            answers[mode] = con.execute(group_sql.format(s=source(f, con))).fetchall()
            gb.append(time.perf_counter() - t0)
        con.close()
        return {"lookup_ms_median": round(statistics.median(lk) * 1000, 1),
                "count_ms_median": round(statistics.median(ct) * 1000, 1),
                "group_by_ms_median": round(statistics.median(gb) * 1000, 1)}

    def via_dataset(f, con):
        crypto.register(con, "plain_ds", f)
        return "plain_ds"

    for mode, f in files.items():
        out[f"serve_{mode}"] = serve(mode, f, crypto.read_parquet_sql)
        t0 = time.perf_counter()
        pq.read_table(f, **crypto.arrow_read_options(f))
        out[f"serve_{mode}"]["pyarrow_full_read_ms"] = round((time.perf_counter() - t0) * 1000, 1)
    out["serve_plain_via_dataset"] = serve("plain_via_dataset", files["plain"], via_dataset)
    assert answers["plain"] == answers["encrypted"] == answers["plain_via_dataset"], "group-by differs"
    # the service's fast path (sharing/service/fastpath.py): a key-sorted copy (encrypted for an
    # encrypted source, built from the in-memory decryption), then lookups read one row group
    from govlake.sharing.service import fastpath as F

    for mode, f in files.items():
        t0 = time.perf_counter()
        idx = F.Index(f, "id_number", copy_dir=tmp / "lookup" / mode)
        build = time.perf_counter() - t0
        F.CACHE.max_bytes = 0  # every lookup decodes its row group (no LRU hits)
        lk = []
        for key in probes:
            t0 = time.perf_counter()
            assert idx.lookup(key, ["name", "phone", "address"]), "fast path found nothing"
            lk.append(time.perf_counter() - t0)
        out[f"fastpath_{mode}"] = {"copy_build_s": round(build, 2), "copy_encrypted": idx.encrypted,
                                   "lookup_ms_median": round(statistics.median(lk) * 1000, 2)}
    # DuckDB's own reader on the encrypted file, with the file's data key (ADR 0014)
    import base64

    con = duckdb.connect()
    name, dek = crypto._file_key(files["encrypted"])
    con.execute(f"PRAGMA add_parquet_key('{name}', '{base64.b64encode(dek).decode()}')")
    try:
        con.execute(f"SELECT * FROM read_parquet('{files['encrypted']}', "
                    f"encryption_config = {{footer_key: '{name}'}})").fetchall()
        out["duckdb_reader_on_encrypted"] = "ok"
    except duckdb.Error as exc:
        out["duckdb_reader_on_encrypted"] = str(exc).splitlines()[0][:120]
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
