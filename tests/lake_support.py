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
