"""How long the masked renditions of ``population_base`` take to build (govlake.sharing.renditions).

    .venv/bin/python benchmarks/renditions_bench.py --rows 1000000
    .venv/bin/python benchmarks/renditions_bench.py --product-file lake/published/population_base/current/population_base.parquet

Without ``--product-file`` a synthetic ``population_base`` of ``--rows`` people (the columns
of the published product, in its standard form) is generated with pyarrow/numpy. The renditions
built are the ones the reviewed grants (config/grants.yml, or ``--grants``) need for it — the
same set ``publish()`` builds — with a throw-away token key unless GOVLAKE_TOKEN_KEY(_FILE) is
set. Prints, per rendition and in total, seconds (wall and CPU), rows/s and MB/s (source
Parquet bytes / wall second), and the ratio to the shared dbt build (``--shared-seconds``, by
default the 1 M figure of docs/performance.md, scaled linearly with the row count).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from govlake import grants, masking, products
from govlake.sharing import renditions as R

SHARED_1M_SECONDS = 8.2  # "dbt shared" at 1 M, docs/performance.md (session 10): wall
SHARED_1M_CPU_SECONDS = 14.1  # and CPU (the more robust figure on the shared 2-core machine)
_WEIGHTS = np.array([7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2])
_SURNAMES = list("王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹") + ["欧阳", "司马"]
_GIVEN = list("伟芳娜秀英敏静丽强磊军洋勇艳杰娟涛明超兰霞平刚桂")
_DIVISIONS = [("110105", "北京市朝阳区"), ("330106", "浙江省杭州市西湖区"), ("440305", "广东省深圳市南山区"),
              ("320583", "江苏省苏州市昆山市"), ("450103", "广西壮族自治区南宁市青秀区"),
              ("150102", "内蒙古自治区呼和浩特市新城区")]
_STREETS = ["建国路88号", "文三路100号", "人民大道1号3栋201室", "解放街12号", "民族大道1号"]


def synthetic_population(n: int, seed: int = 11) -> pa.Table:
    """``n`` people in the published form of population_base (18-digit IDs, 11-digit phones)."""
    rng = np.random.default_rng(seed)
    div = rng.integers(0, len(_DIVISIONS), n)
    codes = np.array([d[0] for d in _DIVISIONS])[div]
    days = rng.integers(0, 30000, n).astype("timedelta64[D]") + np.datetime64("1940-01-01")
    births = np.datetime_as_string(days, unit="D")
    ymd = np.char.replace(births, "-", "")
    seq = np.char.zfill(rng.integers(0, 1000, n).astype(str), 3)
    first17 = np.char.add(np.char.add(codes, ymd), seq)
    digits = np.frombuffer("".join(first17.tolist()).encode("ascii"), dtype=np.uint8).reshape(n, 17) - 48
    check = np.array(list("10X98765432"))[(digits * _WEIGHTS).sum(axis=1) % 11]
    ids = np.char.add(first17, check)
    surname = np.array(_SURNAMES)[rng.integers(0, len(_SURNAMES), n)]
    given = np.array(_GIVEN)
    glen = rng.integers(1, 3, n)
    names = np.char.add(surname, np.char.add(given[rng.integers(0, len(given), n)],
                                             np.where(glen == 2, given[rng.integers(0, len(given), n)], "")))
    address = np.char.add(np.array([d[1] for d in _DIVISIONS])[div],
                          np.array(_STREETS)[rng.integers(0, len(_STREETS), n)])
    phone = np.char.add("13", np.char.zfill(rng.integers(0, 10**9, n).astype(str), 9))
    null = rng.random(n) < 0.02
    return pa.table({
        "id_number": pa.array(ids.tolist()),
        "name": pa.array(names.tolist()),
        "gender_code": pa.array(np.where(digits[:, 16] % 2 == 1, "1", "2").tolist()),
        "birth_date": pa.array(births.tolist()),
        "ethnicity_code": pa.array(np.char.zfill(rng.integers(1, 57, n).astype(str), 2).tolist()),
        "division_code": pa.array(codes.tolist()),
        "address": pa.array(address.tolist(), mask=null),
        "marital_status_code": pa.array(np.array(["10", "20", "30", "40"])[rng.integers(0, 4, n)].tolist()),
        "phone": pa.array(phone.tolist(), mask=rng.random(n) < 0.05),
        "in_household_registration": pa.array(rng.random(n) < 0.97),
        "known_by": pa.array(np.array(["公安", "公安,民政", "公安,人社"])[rng.integers(0, 3, n)].tolist()),
        "department_count": pa.array(rng.integers(1, 4, n).astype(np.int32)),
    })


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000, help="people in the synthetic product")
    ap.add_argument("--product-file", type=Path, help="a population_base Parquet file to use instead")
    ap.add_argument("--product", default="population_base")
    ap.add_argument("--grants", type=Path, help="grants file (default: config/grants.yml)")
    ap.add_argument("--shared-seconds", type=float,
                    help="the shared dbt build's wall seconds to compare with "
                         f"(default {SHARED_1M_SECONDS} s per 1 M rows, docs/performance.md)")
    ap.add_argument("--shared-cpu-seconds", type=float,
                    help=f"the shared dbt build's CPU seconds (default {SHARED_1M_CPU_SECONDS} s per 1 M rows)")
    ap.add_argument("--threads", type=int, help="DuckDB threads (default: all cores)")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="renditions-bench-"))
    if args.product_file:
        src = args.product_file
    else:
        t = time.monotonic()
        src = work / f"{args.product}.parquet"
        pq.write_table(synthetic_population(args.rows), src, compression="zstd")
        print(f"generated {args.rows:,} rows in {time.monotonic() - t:.1f} s -> {src}")
    meta = products.load().get(args.product)
    roles = grants.load(args.grants)
    columns = pq.read_schema(src).names
    rows = pq.read_metadata(src).num_rows
    size_mb = src.stat().st_size / 1e6
    try:
        key = masking.load_key()
    except masking.TokenKeyError:
        key = os.urandom(32)  # a throw-away key: the cost does not depend on it
    needs = [n for n in R.needed_plans(args.product, meta, roles, columns)
             if not all(c.treatment == "clear" for c in n.plan)]
    print(f"{args.product}: {rows:,} rows, {size_mb:.1f} MB, {len(needs)} renditions "
          f"(load average {os.getloadavg()[0]:.2f})")
    results, wall0, cpu0 = [], time.monotonic(), _cpu()
    for need in needs:
        rid = need.rid(masking.key_id(key))
        t, c = time.monotonic(), _cpu()
        info = R.build(src, work / f"{rid}.parquet", need.plan, need.internal, key, threads=args.threads)
        wall, cpu = time.monotonic() - t, _cpu() - c
        kinds = {}
        for col in need.plan:
            kinds[col.treatment] = kinds.get(col.treatment, 0) + 1
        results.append({"id": rid, "roles": list(need.roles), "treatments": kinds, "seconds": round(wall, 2),
                        "cpu_seconds": round(cpu, 2), "bytes": info["bytes"]})
        print(f"  {rid}  {','.join(need.roles):<28} {json.dumps(kinds, ensure_ascii=False):<46} "
              f"{wall:6.2f} s  cpu {cpu:6.2f} s  {rows / wall / 1e6:5.2f} M rows/s  {size_mb / wall:6.1f} MB/s  "
              f"-> {info['bytes'] / 1e6:.1f} MB")
    wall, cpu = time.monotonic() - wall0, _cpu() - cpu0
    shared = args.shared_seconds or SHARED_1M_SECONDS * rows / 1e6
    shared_cpu = args.shared_cpu_seconds or SHARED_1M_CPU_SECONDS * rows / 1e6
    ratio = wall / shared if shared else float("nan")
    cpu_ratio = cpu / shared_cpu if shared_cpu else float("nan")
    print(f"total: {wall:.2f} s wall, {cpu:.2f} s CPU, {size_mb * len(needs) / wall if wall else 0:.1f} MB/s "
          f"of source read (load average {os.getloadavg()[0]:.2f})")
    print(f"vs the shared dbt build: wall {ratio:.0%} of {shared:.1f} s, CPU {cpu_ratio:.0%} of "
          f"{shared_cpu:.1f} s — target ≤ 30 %")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "source_mb": size_mb, "renditions": results,
                                         "seconds": round(wall, 2), "cpu_seconds": round(cpu, 2),
                                         "shared_seconds": shared, "ratio": round(ratio, 3),
                                         "shared_cpu_seconds": shared_cpu, "cpu_ratio": round(cpu_ratio, 3)},
                                        ensure_ascii=False, indent=2), encoding="utf-8")
    for f in work.iterdir():
        f.unlink()
    work.rmdir()
    return 0


if __name__ == "__main__":
    sys.exit(main())
