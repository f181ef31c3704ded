"""Benchmark the GX gate (GX SQL engine pushed down to DuckDB) on a synthetic population_base.

    .venv/bin/python benchmarks/gate_bench.py --rows 10000000

Generates the Parquet file with DuckDB, then runs ``govlake.gate.validate`` in a child process
and reports wall time and the child's peak RSS (ru_maxrss). Nothing is downloaded.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SQL = """
copy (
  select printf('%017d', i) || (i % 10)::varchar as id_number,
         '张' || (i % 1000)::varchar as name,
         case when i % 2 = 0 then '1' else '2' end as gender_code,
         date '1930-01-01' + (i % 30000)::int as birth_date,
         lpad((1 + i % 56)::varchar, 2, '0') as ethnicity_code,
         '110105' as division_code,
         '北京市朝阳区某街道' || (i % 100)::varchar || '号' as address,
         (['10','20','21','22','23','30','40','90'])[1 + (i % 8)::int] as marital_status_code,
         case when i % 7 = 0 then null else '138' || lpad((i % 100000000)::varchar, 8, '0') end as phone,
         i % 3 <> 0 as in_household_registration,
         'public_security' as known_by,
         1 + (i % 6)::int as department_count
  from range({rows}) t(i)
) to '{path}' (format parquet, row_group_size 1000000)
"""

CHILD = """
import json, sys, time
from pathlib import Path
from govlake.storage import Lake
from govlake import gate
lake = Lake(Path(sys.argv[1])).ensure()
t = time.perf_counter()
r = gate.validate(lake, "shared", {"population_base": Path(sys.argv[2])}, "bench")
print(json.dumps({"seconds": time.perf_counter() - t, "success": r.success,
                  "expectations": r.suite_results["population_base"].evaluated,
                  "failed": [f.describe() for f in r.suite_results["population_base"].failed]}))
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--dir", default=None)
    args = ap.parse_args()
    import duckdb

    work = Path(args.dir or tempfile.mkdtemp(prefix="gate_bench_"))
    work.mkdir(parents=True, exist_ok=True)
    path = work / "population_base.parquet"
    t = time.perf_counter()
    con = duckdb.connect()
    con.execute(SQL.format(rows=args.rows, path=path))
    con.close()
    gen = time.perf_counter() - t
    t = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", CHILD, str(work / "lake"), str(path)],
                         check=True, capture_output=True, text=True)
    wall = time.perf_counter() - t
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    res = json.loads(out.stdout.strip().splitlines()[-1])
    print(json.dumps({
        "rows": args.rows, "parquet_mb": round(path.stat().st_size / 2**20, 1),
        "generate_s": round(gen, 1), "validate_s": round(res["seconds"], 1),
        "child_wall_s_incl_imports": round(wall, 1), "peak_rss_mb": round(peak_kib / 1024),
        "expectations": res["expectations"], "success": res["success"], "failed": res["failed"],
    }, ensure_ascii=False, indent=2))


if __name__ == "__main__":
    main()
