"""Which XLSX reader extraction uses: python-calamine vs openpyxl read-only, on one workbook.

    .venv/bin/python benchmarks/xlsx_reader_bench.py --rows 1000000

Writes a workbook like a housing-fund delivery (person ID typed as a number / text, USCC, base
and amount as numbers, a date cell) with openpyxl write-only, then reads every row as strings in
a fresh process per reader, reporting seconds and peak RSS (ru_maxrss).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path


def write(path: Path, rows: int) -> None:
    import datetime as dt

    from openpyxl import Workbook
    wb = Workbook(write_only=True)
    ws = wb.create_sheet("缴存明细")
    ws.append(["证件号码", "单位统一社会信用代码", "缴存基数", "月缴存额", "缴存月份", "开户日期"])
    d0 = dt.date(2015, 1, 1)
    for i in range(rows):
        ws.append([f"11010519900307{i % 10000:04d}", "91110000600037341L", 8000 + i % 500, 960.5 + i % 7,
                   "2026-10", d0 + dt.timedelta(days=i % 3000)])
    wb.save(path)


def read_calamine(path: str) -> int:
    from python_calamine import CalamineWorkbook
    wb = CalamineWorkbook.from_path(path)
    n = 0
    for row in wb.get_sheet_by_name(wb.sheet_names[0]).iter_rows():
        [str(v) for v in row]
        n += 1
    return n


def read_openpyxl(path: str) -> int:
    from openpyxl import load_workbook
    wb = load_workbook(path, read_only=True, data_only=True)
    n = 0
    for row in wb[wb.sheetnames[0]].iter_rows(values_only=True):
        [str(v) for v in row]
        n += 1
    wb.close()
    return n


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--path", default="/tmp/govlake_xlsx_bench.xlsx")
    ap.add_argument("--reader")
    a = ap.parse_args()
    p = Path(a.path)
    if a.reader:
        t = time.perf_counter()
        n = {"calamine": read_calamine, "openpyxl": read_openpyxl}[a.reader](str(p))
        print(json.dumps({"reader": a.reader, "rows": n, "seconds": round(time.perf_counter() - t, 1),
                          "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}))
        return
    if not p.exists() or p.stat().st_size == 0:
        t = time.perf_counter()
        write(p, a.rows)
        print(f"wrote {p} ({p.stat().st_size / 1e6:.1f} MB, {a.rows} rows) in {time.perf_counter() - t:.0f} s")
    for r in ("calamine", "openpyxl"):
        subprocess.run([sys.executable, __file__, "--path", str(p), "--reader", r], check=True)


if __name__ == "__main__":
    main()
