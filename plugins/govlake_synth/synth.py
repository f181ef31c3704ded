"""Synthetic rows for ANY declared feed, from its column metadata (the 7th feed needs no code).

``rows_for(ds, n, seed, ids=..., usccs=...)`` -> (header, rows, faults): ``n`` valid rows whose
values follow each column's standard (``id_number``/``uscc`` drawn from the given registered
people and enterprises so that they join, otherwise made up with a valid check character),
then one faulty row per standard that has a rule, with the quarantine reason it must get
(``faults``: [(row number, rule, delivered column)]). ``write_xlsx`` writes them as a
workbook sheet (numbers as number cells, as a department's Excel export holds them).
"""

from __future__ import annotations

import random
from pathlib import Path

from govlake.metadata import Dataset

_W = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2]


def id_check_char(body17: str) -> str:
    return "10X98765432"[sum(int(d) * w for d, w in zip(body17, _W)) % 11]


def _id(r: random.Random) -> str:
    body = f"110105{r.randint(1950, 2004)}{r.randint(1, 12):02d}{r.randint(1, 28):02d}{r.randint(0, 999):03d}"
    return body + id_check_char(body)


def _value(r: random.Random, c, ids: list[str], usccs: list[str], i: int):
    s = c.standard
    if s == "id_number":
        return ids[i % len(ids)] if ids else _id(r)
    if s == "uscc":
        return r.choice(usccs) if usccs else None
    if s == "decimal":
        return round(r.uniform(1000, 30000), 2)
    if s == "year_month":
        return f"2026-{r.randint(1, 10):02d}"
    if s == "date":
        return f"20{r.randint(10, 25)}-{r.randint(1, 12):02d}-{r.randint(1, 28):02d}"
    if s == "phone":
        return f"13{r.randint(100000000, 999999999)}"
    if s == "name":
        return r.choice(["张伟", "王芳", "李娜", "刘洋", "陈静"])
    return f"{c.element}-{i}"


def _fault(c, valid):
    """(faulty value, rule) for a column, or None when its standard has no value rule."""
    s = c.standard
    if s == "id_number":
        return valid[:17] + ("0" if valid[17] != "0" else "1"), "id_number.check_digit"
    if s == "uscc":
        return "91XXXXXXXXXXXXXXXX", "uscc.format"
    if s == "decimal":
        return "一千", "decimal.invalid"
    if s == "year_month":
        return "2026-13", "year_month.invalid"
    if s == "date":
        return "2026-02-31", "date.invalid"
    if s == "phone":
        return "12345", "phone.format"
    return None


def rows_for(ds: Dataset, n: int, seed: int = 0, *, ids: list[str] | None = None,
             usccs: list[str] | None = None) -> tuple[list[str], list[list], list[tuple[int, str, str]]]:
    r = random.Random(f"{ds.id}:{seed}")
    ids, usccs = list(ids or []), list(usccs or [])
    header = ds.column_names
    rows = [[_value(r, c, ids, usccs, i) for c in ds.columns] for i in range(n)]
    faults = []
    for j, c in enumerate(ds.columns):
        f = _fault(c, rows[0][j] if isinstance(rows[0][j], str) else str(rows[0][j]))
        if f is None:
            continue
        row = list(rows[len(faults) % n])
        # a unique key so the faulty row is not a copy of a valid one
        row[j] = f[0]
        rows.append(row)
        faults.append((len(rows), f[1], c.name))
    return header, rows, faults


def write_xlsx(path: Path, sheet: str, header: list[str], rows: list[list]) -> Path:
    from openpyxl import Workbook
    wb = Workbook(write_only=True)
    ws = wb.create_sheet(sheet)
    ws.append(header)
    for row in rows:
        ws.append(row)
    path.parent.mkdir(parents=True, exist_ok=True)
    wb.save(path)
    return path
