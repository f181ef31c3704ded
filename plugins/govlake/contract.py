"""The delivery contract: a delivery's header must be exactly the dataset's declared columns.

``check_contract`` raises :class:`ContractError` (rule ``contract.duplicate_column`` /
``missing_column`` / ``unexpected_column``, naming file and row); a reader that cannot parse a
delivery raises :class:`ParseError`. Shared by the CSV/JSON Lines reader (:mod:`govlake.ingest`)
and the Excel reader (:mod:`govlake.xlsx`), which both sit above it; ``govlake.ingest`` re-exports
the three names.
"""

from __future__ import annotations

from govlake.metadata import Dataset


class ContractError(ValueError):
    """The delivery does not match the dataset's declared columns."""

    def __init__(self, rule: str, message: str, row: int | None = None, columns: list[str] | None = None):
        super().__init__(message)
        self.rule = rule
        self.row = row
        self.columns = columns or []


class ParseError(ValueError):
    def __init__(self, rule: str, message: str, row: int | None = None):
        super().__init__(message)
        self.rule = rule
        self.row = row


def check_contract(ds: Dataset, header: list[str], source: str) -> None:
    expected = ds.column_names
    dup = sorted({h for h in header if header.count(h) > 1})
    if dup:
        raise ContractError("contract.duplicate_column",
                            f"{source}: row 1 (header): rule contract.duplicate_column: column(s) {dup} appear twice",
                            row=1, columns=dup)
    missing = [c for c in expected if c not in header]
    extra = [h for h in header if h not in expected]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing column(s) {missing}")
        if extra:
            parts.append(f"unexpected column(s) {extra}")
        rule = "contract.missing_column" if missing else "contract.unexpected_column"
        raise ContractError(rule, f"{source}: row 1 (header): rule {rule}: {'; '.join(parts)} "
                                  f"(expected {expected})", row=1, columns=missing + extra)
