"""Excel (XLSX) deliveries: one sheet read into the same raw record batches as a CSV (strings).

Reader: python-calamine (Rust calamine; benchmarks/xlsx_reader_bench.py measured it against
openpyxl read-only on a 1 M-row workbook). The sheet is the one the table meta names
(``sheet: 缴存明细``) or, when none is named, the workbook's only sheet.

Cells become the text a department would have exported as CSV, so the standards rules (SQL,
dbt_project/macros/standards/) handle what Excel did to the values:
  - a number cell: integral floats without ``.0`` (``45231.0`` -> ``45231``: a date typed as a
    General cell is its serial day number, which std_date accepts; an 18-digit ID typed as a
    number -> ``110105199003071000``, Excel having kept 15 significant digits: the
    id_number.excel_truncated rule), other floats in their shortest form;
  - a date/datetime cell: ``YYYY-MM-DD`` (``YYYY-MM-DD HH:MM:SS`` with a time of day);
  - a text cell as is (``1.10105E+17`` stays text: id_number.format); empty -> ``''``.

Contract (file quarantine, the reason names file, sheet and rule): the named sheet missing
(``contract.missing_sheet``), several sheets and none named (``contract.ambiguous_sheet``),
the header row's columns (govlake.contract.check_contract: missing/unexpected/duplicate column).
"""

from __future__ import annotations

import datetime as dt
import math
from decimal import Decimal
from pathlib import Path
from typing import Iterator

import pyarrow as pa

from govlake.contract import ContractError, ParseError, check_contract
from govlake.metadata import Dataset

BATCH_ROWS = 100_000


def sheet_name(ds: Dataset) -> str | None:
    s = ds.extra.get("sheet")
    return str(s) if s not in (None, "") else None


def excel_touched(ds: Dataset) -> bool:
    """The feed's values went through Excel (an XLSX delivery, or meta ``excel_touched: true``)."""
    return ds.format == "xlsx" or ds.extra.get("excel_touched") in (True, "true", "yes", 1)


def cell_text(v) -> str:
    if v is None:
        return ""
    if isinstance(v, str):
        return v
    if isinstance(v, bool):
        return "TRUE" if v else "FALSE"
    if isinstance(v, float):
        if math.isfinite(v) and v == int(v) and abs(v) < 1e21:
            if abs(v) >= 1e15:  # Excel keeps 15 significant digits: show what it shows, 1101051990030710**00**
                return str(int(Decimal(format(v, ".15g"))))
            return str(int(v))
        return repr(v)
    if isinstance(v, int):
        return str(v)
    if isinstance(v, dt.datetime):
        return v.strftime("%Y-%m-%d") if v.time() == dt.time(0) else v.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(v, dt.date):
        return v.isoformat()
    if isinstance(v, dt.time):
        return v.strftime("%H:%M:%S")
    return str(v)


def open_sheet(path: Path, ds: Dataset, source: str):
    """(sheet name, calamine sheet) of the delivery; ContractError naming file, sheet and rule."""
    from python_calamine import CalamineWorkbook


    try:
        wb = CalamineWorkbook.from_path(str(path))
    except Exception as e:  # not a zip / not a workbook
        raise ParseError("xlsx.unreadable", f"{source}: rule xlsx.unreadable: not a readable XLSX workbook ({e})",
                         row=None) from e
    names = list(wb.sheet_names)
    want = sheet_name(ds)
    if want is not None:
        if want not in names:
            raise ContractError("contract.missing_sheet",
                                f"{source}: sheet {want!r}: rule contract.missing_sheet: the workbook has no sheet "
                                f"{want!r} (sheets: {names})")
        name = want
    elif len(names) == 1:
        name = names[0]
    else:
        raise ContractError("contract.ambiguous_sheet",
                            f"{source}: rule contract.ambiguous_sheet: the workbook has {len(names)} sheets {names} "
                            "and the source YAML names none (table meta 'sheet')")
    return name, wb.get_sheet_by_name(name)


def iter_xlsx(path: Path, ds: Dataset, source: str) -> Iterator[pa.RecordBatch]:
    """Header checked against the contract, then record batches of strings (delivered column names)."""

    name, sheet = open_sheet(path, ds, source)
    rows = iter(sheet.iter_rows())
    try:
        header = [cell_text(v).strip() for v in next(rows)]
    except StopIteration:
        raise ParseError("file.empty", f"{source}: sheet {name!r}: rule file.empty: the sheet has no header row",
                         row=1) from None
    while header and header[-1] == "":  # trailing empty header cells (formatting beyond the table)
        header.pop()
    check_contract(ds, header, f"{source}: sheet {name!r}")
    width = len(header)
    cols: list[list[str]] = [[] for _ in header]

    def flush() -> pa.RecordBatch:
        b = pa.record_batch([pa.array(c, pa.string()) for c in cols], names=header)
        for c in cols:
            c.clear()
        return b

    empty = 0  # empty rows seen and not yet written: kept only if a non-empty row follows
    for row in rows:
        vals = [cell_text(v) for v in row[:width]]
        if not any(vals):
            empty += 1  # Excel keeps formatted but empty rows at the end of the used range
            continue
        for _ in range(empty):  # inside the table an empty row is a row (its row number stays right)
            for c in cols:
                c.append("")
        empty = 0
        vals += [""] * (width - len(vals))
        for i, v in enumerate(vals):
            cols[i].append(v)
        if len(cols[0]) >= BATCH_ROWS:
            yield flush()
    if cols and cols[0]:
        yield flush()
