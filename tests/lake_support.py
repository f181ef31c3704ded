"""Point GOVLAKE_LAKE_ROOT at a lake for a whole test module (module-scoped fixtures cannot use
monkeypatch)."""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path

from govlake.storage import Lake


@contextmanager
def use_lake_root(root: Path):
    old = os.environ.get("GOVLAKE_LAKE_ROOT")
    os.environ["GOVLAKE_LAKE_ROOT"] = str(root)
    try:
        yield Lake(root).ensure()
    finally:
        if old is None:
            os.environ.pop("GOVLAKE_LAKE_ROOT", None)
        else:
            os.environ["GOVLAKE_LAKE_ROOT"] = old


def passed_gate(lake: Lake, run_id: str, product: str, candidate: Path, rows: int | None, *,
                success: bool = True, failed: list | None = None, evaluated: int = 5):
    """The shared gate's result for one candidate file, as ``gate.validate`` would return it,
    for tests that publish a file without running GX (its report folder is created)."""
    from govlake.gate import GateResult, SuiteResult

    out = lake.report_dir(run_id, "shared")
    out.mkdir(parents=True, exist_ok=True)
    sr = SuiteResult(model=product, suite=f"shared.{product}", success=success, evaluated=evaluated,
                     failed=failed or [], table=str(candidate), row_count=rows)
    return GateResult(layer="shared", run_id=run_id, success=success, suite_results={product: sr},
                      report_path=out / "report.html", docs_path=out / "data_docs" / "index.html",
                      json_path=out / "validation.json", seconds=0.1)
