"""The one module that knows where the lake's zones live and how a version is published.

Everything else asks this module for paths; nobody builds lake paths by hand.

Layout (see docs/adr/0002-lake-layout.md)::

    landing/<dept>/<dataset>/<YYYY-MM-DD>/<file>        as delivered, never modified
    raw/<dept>/<dataset>/<batch_id>/part-*.parquet      strings + lineage columns
    raw/_ledger.parquet                                 export of the delivery ledger (for dbt)
    quarantine/files/<dept>/<dataset>/<batch_id>/       rejected files + reason.json
    quarantine/rows/...                                 rows rejected by a standard (dbt)
    candidate/<run_id>/<layer>/<model>.parquet          dbt output awaiting its gate
    published/<product>/v=<n>/                          immutable, gated versions
    published/<product>/current -> v=<n>               symlink, switched atomically
    catalog/  audit/  _meta/ (ledger.sqlite, locks)
"""

from __future__ import annotations

import hashlib
import json
import errno
import fcntl
import time
import os
import re
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from govlake import config

_VERSION_RE = re.compile(r"^v=(\d+)$")


@dataclass(frozen=True)
class Lake:
    root: Path

    @classmethod
    def default(cls) -> "Lake":
        return cls(config.lake_root())

    # ---- zones -------------------------------------------------------------------------
    @property
    def landing_root(self) -> Path:
        return self.root / "landing"

    @property
    def raw_root(self) -> Path:
        return self.root / "raw"

    @property
    def quarantine_root(self) -> Path:
        return self.root / "quarantine"

    @property
    def candidate_root(self) -> Path:
        return self.root / "candidate"

    @property
    def published_root(self) -> Path:
        return self.root / "published"

    @property
    def catalog_root(self) -> Path:
        return self.root / "catalog"

    @property
    def audit_root(self) -> Path:
        return self.root / "audit"

    @property
    def meta_root(self) -> Path:
        return self.root / "_meta"

    @property
    def reports_root(self) -> Path:
        """Validation reports and GX Data Docs."""
        return self.root / "reports"

    def report_dir(self, run_id: str, layer: str) -> Path:
        """Validation report + GX Data Docs of one gate run (kept, pass or fail)."""
        return self.reports_root / run_id / layer

    @property
    def locks_root(self) -> Path:
        return self.meta_root / "locks"

    def landing(self, dept: str, dataset: str, date: str | None = None) -> Path:
        p = self.landing_root / dept / dataset
        return p / date if date else p

    def raw(self, dept: str, dataset: str) -> Path:
        return self.raw_root / dept / dataset

    def raw_batch(self, dept: str, dataset: str, batch_id: str) -> Path:
        return self.raw(dept, dataset) / batch_id

    def raw_glob(self, dept: str, dataset: str) -> str:
        return str(self.raw(dept, dataset) / "*" / "*.parquet")

    @property
    def ledger_db(self) -> Path:
        return self.meta_root / "ledger.sqlite"

    @property
    def access_db(self) -> Path:
        """Access requests and the grants approved from them (govlake.access_requests)."""
        return self.meta_root / "access.sqlite"

    @property
    def landing_anomalies_db(self) -> Path:
        """Landing folders/files refused by extraction (govlake.landing)."""
        return self.meta_root / "landing_anomalies.sqlite"

    @property
    def ledger_export(self) -> Path:
        return self.raw_root / "_ledger.parquet"

    def quarantine_files(self, dept: str, dataset: str) -> Path:
        return self.quarantine_root / "files" / dept / dataset

    @property
    def quarantine_rows_root(self) -> Path:
        return self.quarantine_root / "rows"

    @property
    def duckdb_path(self) -> Path:
        return self.meta_root / "govlake.duckdb"

    def candidate(self, run_id: str) -> Path:
        return self.candidate_root / run_id

    def quarantine_rows_run(self, run_id: str) -> Path:
        """Rows the standards rejected in one transform run (``quarantine_rows.parquet`` inside)."""
        return self.quarantine_rows_root / f"run_id={run_id}"

    # ---- operational files under _meta/ ----------------------------------------------------
    @property
    def gate_history(self) -> Path:
        """One JSON line per gate verdict (govlake.ops.gate_history)."""
        return self.meta_root / "gate_history.jsonl"

    @property
    def alerts_log(self) -> Path:
        return self.meta_root / "alerts.jsonl"

    @property
    def alerts_db(self) -> Path:
        return self.meta_root / "alerts.sqlite"

    @property
    def witness_root(self) -> Path:
        """Local witness copies of the audit checkpoints (govlake.audit)."""
        return self.meta_root / "witness"

    @property
    def service_root(self) -> Path:
        """The sharing service's state (client registry, token keys, access records)."""
        return self.meta_root / "service"

    @property
    def person_accesses_db(self) -> Path:
        """Per-person access records (govlake.sharing.accesses)."""
        return self.service_root / "accesses.sqlite"

    @property
    def dbt_work(self) -> Path:
        """dbt's working copy of the project (target/, logs/) for this lake."""
        return self.meta_root / "dbt"

    @property
    def dbt_target(self) -> Path:
        return self.dbt_work / "target"

    def extract_tmp(self, dataset_id: str, batch_id: str) -> Path:
        """A non-UTF-8 delivery decoded once into this UTF-8 copy while it is extracted."""
        return self.meta_root / "extract_tmp" / f"{dataset_id}.{batch_id}.utf8"

    @property
    def run_lock(self) -> Path:
        return self.locks_root / "run.lock"

    def ingest_lock(self, dataset_id: str, sha256: str) -> Path:
        """Held while a file with these bytes is ingested into this dataset (one batch id)."""
        return self.locks_root / f"ingest-{dataset_id}-{sha256[:32]}.lock"

    def publish_lock(self, product: str) -> Path:
        return self.locks_root / f"publish-{product}.lock"

    def rendition_lock(self, product: str, version: int, rid: str) -> Path:
        return self.locks_root / f"rendition-{product}-v{version}-{rid}.lock"

    # ---- audit log ---------------------------------------------------------------------------
    @property
    def audit_log(self) -> Path:
        return self.audit_root / "audit.jsonl"

    @property
    def audit_head(self) -> Path:
        return self.audit_root / "head.json"

    @property
    def audit_lock(self) -> Path:
        return self.audit_root / ".lock"

    @property
    def audit_checkpoints(self) -> Path:
        return self.audit_root / "checkpoints.jsonl"

    # ---- the catalog site --------------------------------------------------------------------
    @property
    def catalog_index(self) -> Path:
        return self.catalog_root / "index.html"

    @property
    def catalog_json(self) -> Path:
        return self.catalog_root / "catalog.json"

    @property
    def dashboard_page(self) -> Path:
        return self.catalog_root / "dashboard.html"

    @property
    def dbt_docs_page(self) -> Path:
        return self.catalog_root / "dbt_docs.html"

    # ---- published versions ------------------------------------------------------------
    def product_dir(self, product: str) -> Path:
        return self.published_root / product

    def version_dir(self, product: str, version: int) -> Path:
        return self.product_dir(product) / f"v={version}"

    def rendition_path(self, product: str, version: int, rid: str) -> Path:
        """A masked rendition of a version (govlake.sharing.renditions)."""
        return self.version_dir(product, version) / "renditions" / f"{rid}.parquet"

    def current_link(self, product: str) -> Path:
        return self.product_dir(product) / "current"

    def versions(self, product: str) -> list[int]:
        d = self.product_dir(product)
        if not d.is_dir():
            return []
        out = []
        for child in d.iterdir():
            m = _VERSION_RE.match(child.name)
            if m and child.is_dir():
                out.append(int(m.group(1)))
        return sorted(out)

    def current_version(self, product: str) -> int | None:
        link = self.current_link(product)
        if not link.is_symlink() and not link.exists():
            return None
        m = _VERSION_RE.match(os.readlink(link)) if link.is_symlink() else None
        return int(m.group(1)) if m else None

    def current_dir(self, product: str) -> Path | None:
        v = self.current_version(product)
        return self.version_dir(product, v) if v is not None else None

    def products(self) -> list[str]:
        if not self.published_root.is_dir():
            return []
        return sorted(p.name for p in self.published_root.iterdir() if p.is_dir())

    def manifest(self, product: str, version: int | None = None) -> dict | None:
        v = self.current_version(product) if version is None else version
        if v is None:
            return None
        f = self.version_dir(product, v) / "_manifest.json"
        return json.loads(f.read_text(encoding="utf-8")) if f.exists() else None

    def switch_current(self, product: str, version: int) -> None:
        """Point ``current`` at ``v=<version>`` atomically (symlink + rename(2))."""
        target = self.version_dir(product, version)
        if not target.is_dir():
            raise FileNotFoundError(f"cannot publish {product}: {target} does not exist")
        link = self.current_link(product)
        tmp = link.with_name(f".current.{os.getpid()}.tmp")
        if tmp.is_symlink() or tmp.exists():
            tmp.unlink()
        os.symlink(target.name, tmp)
        os.replace(tmp, link)
        fsync_dir(link.parent)

    def ensure(self) -> "Lake":
        """Create the zones; the lake root is private to the service's OS user (0700), so no
        other local account reaches any file below it, whatever the file's own mode."""
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        if self.root.stat().st_mode & 0o077:
            os.chmod(self.root, 0o700)
        for p in (self.landing_root, self.raw_root, self.quarantine_root, self.published_root,
                  self.catalog_root, self.audit_root, self.meta_root, self.reports_root):
            p.mkdir(parents=True, exist_ok=True)
        return self


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def sha256_file(path: Path) -> str:
    """The SHA-256 of a file, read in 1 MiB chunks into one reused buffer."""
    h = hashlib.sha256()
    buf = memoryview(bytearray(1 << 20))  # one reused buffer: no allocation (page faults) per chunk
    with open(path, "rb", buffering=0) as fh:
        while n := fh.readinto(buf):
            h.update(buf[:n])
    return h.hexdigest()


class LockTimeout(RuntimeError):
    """An exclusive file lock could not be taken in time."""


@contextmanager
def exclusive_lock(path: Path, timeout: float, holder_note: bool = False) -> Iterator[int]:
    """Exclusive ``flock`` on ``path`` (created if missing), waiting up to ``timeout`` seconds;
    raises :class:`LockTimeout`. With ``holder_note`` the file records the holder's pid. The
    kernel releases the lock when the process dies, so a kill leaves no stale lock."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as e:
                if e.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                if time.monotonic() > deadline:
                    raise LockTimeout(f"could not lock {path} within {timeout:.0f}s") from e
                time.sleep(0.05)
        if holder_note:
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
        yield fd
    finally:
        try:
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)
