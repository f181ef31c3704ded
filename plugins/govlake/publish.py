"""Write-audit-publish: a gated candidate becomes an immutable ``published/<product>/v=<n>/``.

Sequence (see docs/adr/0004-atomic-publish.md):

1. refuse unless the gate result for *this* product passed, on *this* candidate file;
2. take an exclusive ``fcntl`` lock per product (``_meta/locks/publish-<product>.lock``), so
   concurrent publishers never pick the same version number;
3. copy the candidate into a hidden staging dir ``.v=<n>.staging-<pid>`` (sha256 computed on
   the way), write ``_manifest.json``, fsync files and dir;
4. ``rename(2)`` the staging dir to ``v=<n>`` (never over an existing version), fsync parent;
5. switch ``current`` with ``Lake.switch_current`` (new symlink + ``rename(2)``), still under
   the lock.

A reader that resolves ``current`` once (``resolve_current``) and reads from that directory
sees a complete old or complete new version, never a mix. ``publish`` returns a
``Publication``: an ``int`` (the version) carrying ``.record``, the publication record the
caller hands to the audit log.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
import shutil
import threading
from concurrent.futures import ThreadPoolExecutor, wait
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from govlake.gate import GateFailed, GateResult, validate
from govlake.storage import Lake, LockTimeout, exclusive_lock, fsync_dir

log = logging.getLogger(__name__)

MANIFEST = "_manifest.json"
_CHUNK = 8 * 1024 * 1024


class PublishError(RuntimeError):
    """Publication refused or impossible (ungated candidate, lock timeout, version clash)."""


class Publication(int):
    """The published version number, with the publication record attached (``.record``)."""

    record: dict

    def __new__(cls, version: int, record: dict) -> "Publication":
        obj = super().__new__(cls, version)
        obj.record = record
        return obj

    @property
    def version(self) -> int:
        return int(self)

    @property
    def path(self) -> Path:
        return Path(self.record["path"])


# ---- lock ---------------------------------------------------------------------------------------
@contextmanager
def product_lock(lake: Lake, product: str, timeout: float = 600.0) -> Iterator[Path]:
    """Exclusive per-product publish lock (``flock`` on ``_meta/locks/publish-<product>.lock``)."""
    path = lake.publish_lock(product)
    try:
        with exclusive_lock(path, timeout, holder_note=True):
            yield path
    except LockTimeout as e:
        raise PublishError(f"{e}: another publisher of {product} is running") from e


# ---- helpers ------------------------------------------------------------------------------------
def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _copy_fsync(src: Path, dst: Path) -> tuple[str, int]:
    """Copy ``src`` to a new file ``dst``, hashing on the way; fsync; make it read-only."""
    h = hashlib.sha256()
    size = 0
    with open(src, "rb") as fin, open(dst, "xb") as fout:
        while chunk := fin.read(_CHUNK):
            h.update(chunk)
            fout.write(chunk)
            size += len(chunk)
        fout.flush()
        os.fsync(fout.fileno())
    os.chmod(dst, 0o400)  # read-only, owner only
    return h.hexdigest(), size


def _encrypt_fsync(src: Path, dst: Path) -> tuple[str, int, str]:
    """Rewrite ``src`` as the encrypted Parquet file ``dst`` (newest keyring key,
    :mod:`govlake.sharing.crypto`); fsync; read-only. Returns (sha256, bytes, key id)."""
    from govlake.sharing import crypto

    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
    try:
        kid = crypto.encrypt_copy(src, tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.rename(tmp, dst)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.chmod(dst, 0o400)
    return sha256_file(dst), dst.stat().st_size, kid


def _parquet_info(path: Path) -> tuple[int, list[dict]]:
    import pyarrow.parquet as pq

    from govlake.sharing import crypto

    md = pq.read_metadata(path, **crypto.arrow_read_options(path))
    schema = md.schema.to_arrow_schema()
    return md.num_rows, [{"name": f.name, "type": str(f.type)} for f in schema]


def _remove_version(path: Path) -> None:
    """Remove a version directory whose files and folders were made read-only."""
    for root, dirs, _files in os.walk(path):
        os.chmod(root, 0o700)
        for d in dirs:
            os.chmod(os.path.join(root, d), 0o700)
    shutil.rmtree(path, ignore_errors=True)


def _next_version(lake: Lake, product: str) -> int:
    return max(lake.versions(product), default=0) + 1


def resolve_current(lake: Lake, product: str) -> Path | None:
    """The version directory ``current`` points at, resolved once. Read everything from the
    returned path (not through ``current``) to be sure of seeing one version."""
    link = lake.current_link(product)
    try:
        target = os.readlink(link)
    except FileNotFoundError:
        return None
    return (link.parent / target).resolve()


def _gate_verdict(gate_result: GateResult | None, product: str, candidate_file: Path) -> dict:
    if gate_result is None:
        raise PublishError(f"refusing to publish {product}: no gate result (write-audit-publish)")
    sr = gate_result.suite_results.get(product)
    if sr is None:
        raise PublishError(f"refusing to publish {product}: the gate result of run "
                           f"{gate_result.run_id} has no suite for {product} "
                           f"(has {sorted(gate_result.suite_results)})")
    if not sr.success:
        raise GateFailed(gate_result.only(product), product)
    if Path(sr.table).resolve() != Path(candidate_file).resolve():
        raise PublishError(f"refusing to publish {candidate_file} as {product}: the gate "
                           f"validated {sr.table}, not this file")
    return {
        "success": True,
        "layer": gate_result.layer,
        "suite": sr.suite,
        "evaluated": sr.evaluated,
        "row_count": sr.row_count,
        "report_path": str(gate_result.report_path),
        "docs_path": str(gate_result.docs_path),
        "docs_page": sr.docs_page,
        "json_path": str(gate_result.json_path),
    }


_POOL: ThreadPoolExecutor | None = None
_POOL_LOCK = threading.Lock()


def _publish_pool() -> ThreadPoolExecutor:
    """The process's publication threads (created once: threads started per publication each
    left their allocator heaps behind, ~0.4 GB per day at 10 M people)."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = ThreadPoolExecutor(max_workers=_publish_threads(), thread_name_prefix="publish")
        return _POOL


def _publish_threads() -> int:
    """Threads for one publication's passes over the data (``GOVLAKE_PUBLISH_THREADS``, default:
    the machine's cores, at least 1)."""
    raw = os.environ.get("GOVLAKE_PUBLISH_THREADS", "")
    return max(1, int(raw)) if raw.strip().isdigit() else max(1, os.cpu_count() or 1)


def _build_renditions(lake: Lake, product: str, staging: Path, data_name: str,
                      columns: list[str], *, source: Path | None = None, encrypt: bool | None = None,
                      executor=None) -> dict:
    """Build the renditions the product's readers need into ``staging/renditions/``.

    Returns the manifest keys ``renditions`` (built: id, path, sha256, rows, plan),
    ``renditions_skipped`` (token renditions when there is no join-token key: the sharing
    service builds them on demand with ``renditions.ensure``) and, when the grants or product
    metadata cannot be read, ``renditions_error`` (nothing built; all on demand). A rendition
    the SQL build cannot make exactly (RenditionError) is listed as skipped with the error."""
    from govlake import access_requests, grants, masking, products
    from govlake.sharing import renditions as rnd

    try:
        roles = grants.load()
        roles = grants.with_approved(roles, access_requests.approved_grants(lake))
        meta = products.load().get(product)
    except (grants.GrantError, products.ProductMetadataError,
            access_requests.AccessRequestError) as exc:
        log.warning("publish %s: no renditions built: %s", product, exc)
        return {"renditions": [], "renditions_skipped": [],
                "renditions_error": str(exc).splitlines()[0]}
    needs = rnd.needed_plans(product, meta, roles, columns)
    key = None
    if any(n.tokens for n in needs):
        try:
            key = masking.load_key()
        except masking.TokenKeyError as exc:
            log.warning("publish %s: token renditions skipped: %s", product, exc)
    built, skipped = rnd.build_for_publish(staging, data_name, product, needs, key, source=source,
                                           encrypt=encrypt, executor=executor)
    return {"renditions": built, "renditions_skipped": skipped}


# ---- publish ------------------------------------------------------------------------------------
def publish(lake: Lake, product: str, candidate_file: Path, *, run_id: str,
            gate_result: GateResult | None, inputs: list[dict],
            lock_timeout: float = 600.0, renditions: bool = True,
            encrypt: bool | None = None, before_switch=None) -> Publication:
    """Publish a gated candidate Parquet file as the next immutable version of ``product``.

    Returns a ``Publication`` (an ``int``: the version) whose ``.record`` is the publication
    record for the audit log. Raises ``GateFailed`` if the product's suite failed,
    ``PublishError`` if the candidate was not gated or cannot be published.

    With ``renditions`` (the default), the masked renditions every current grant of the
    product needs are built into the staging dir (``renditions/<rid>.parquet``) before the
    rename and listed in the manifest, so the version is complete with them
    (:func:`_build_renditions`, docs/adr/0011-renditions.md).

    ``encrypt`` (default: when the product has an L3/L4 column, or no readable metadata) writes
    the data file with Parquet modular encryption under the keyring's newest key (created if
    there is no keyring); the renditions of an encrypted file are encrypted too, and the
    manifest records the key id (``encryption``; docs/adr/0014-encryption-at-rest.md).
    """
    candidate_file = Path(candidate_file)
    if not candidate_file.is_file():
        raise PublishError(f"cannot publish {product}: candidate {candidate_file} does not exist")
    if not isinstance(inputs, list) or not all(isinstance(i, dict) for i in inputs):
        raise PublishError(f"cannot publish {product}: inputs must be a list of dicts")
    verdict = _gate_verdict(gate_result, product, candidate_file)
    row_count, columns = _parquet_info(candidate_file)
    if verdict["row_count"] is not None and verdict["row_count"] != row_count:
        raise PublishError(f"refusing to publish {product}: {candidate_file} has {row_count} rows "
                           f"but the gate saw {verdict['row_count']} (changed after the gate?)")

    from govlake.sharing import crypto

    if encrypt is None:
        encrypt = crypto.needs_encryption(product, [c["name"] for c in columns])
    if encrypt:
        crypto.ensure_keyring()
    pdir = lake.product_dir(product)
    pdir.mkdir(parents=True, exist_ok=True)
    with product_lock(lake, product, lock_timeout):
        version = _next_version(lake, product)
        final = lake.version_dir(product, version)
        if final.exists() or final.is_symlink():
            raise PublishError(f"{final} already exists: versions are never overwritten")
        staging = pdir / f".v={version}.staging-{os.getpid()}"
        if staging.exists():
            shutil.rmtree(staging)
        staging.mkdir()
        try:
            data_name = f"{product}.parquet"
            # the data file (encrypted or copied) and the renditions (made from the same plain
            # candidate) are independent passes over the data: on a thread pool they use the
            # cores together (each is mostly one core: pyarrow's writer, DuckDB's scan)
            pool = _publish_pool()
            if encrypt:
                data_job = pool.submit(_encrypt_fsync, candidate_file, staging / data_name)
            else:
                data_job = pool.submit(lambda: (*_copy_fsync(candidate_file, staging / data_name), None))
            try:
                rendition_info = (_build_renditions(lake, product, staging, data_name,
                                                    [c["name"] for c in columns], source=candidate_file,
                                                    encrypt=bool(encrypt), executor=pool)
                                  if renditions else None)
            finally:
                wait([data_job])  # no writer left running into a staging folder being removed
            digest, size, key_id = data_job.result()
            created_at = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
            manifest = {
                "product": product,
                "version": version,
                "run_id": run_id,
                "created_at": created_at,
                "row_count": row_count,
                "columns": columns,
                "files": [{"path": data_name, "sha256": digest, "bytes": size,
                           "rows": row_count, "encrypted": bool(encrypt)}],
                "candidate": str(candidate_file),
                "inputs": inputs,
                "gate": verdict,
                "previous_version": lake.current_version(product),
            }
            if rendition_info is not None:
                manifest.update(rendition_info)
            if encrypt:  # no record = a plain version (published before ADR 0014, or by a test)
                manifest["encryption"] = {
                    "scheme": crypto.SCHEME, "algorithm": crypto.ALGORITHM, "uniform": True,
                    "key_id": key_id, "keyring": "GOVLAKE_PARQUET_KEYRING or <work dir>/secrets",
                    "files": [data_name] + [r["path"] for r in (rendition_info or {}).get("renditions", [])]}
            text = json.dumps(manifest, ensure_ascii=False, indent=2, default=str)
            with open(staging / MANIFEST, "x", encoding="utf-8") as fh:
                fh.write(text)
                fh.flush()
                os.fsync(fh.fileno())
            os.chmod(staging / MANIFEST, 0o400)
            fsync_dir(staging)
            os.rename(staging, final)  # atomic; final did not exist (checked under the lock)
            fsync_dir(pdir)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        record = {
            "event": "publish",
            "product": product,
            "version": version,
            "run_id": run_id,
            "created_at": created_at,
            "row_count": row_count,
            "path": str(final),
            "manifest_sha256": hashlib.sha256(text.encode("utf-8")).hexdigest(),
            "files": manifest["files"],
            "inputs": inputs,
            "previous_version": manifest["previous_version"],
            "gate": {k: verdict[k] for k in ("suite", "success", "report_path", "docs_path")},
        }
        if before_switch is not None:  # e.g. the audit entry: durable before the version goes live
            try:
                before_switch(record)
            except BaseException:
                _remove_version(final)  # never live, never audited: removed
                fsync_dir(pdir)
                raise
        lake.switch_current(product, version)

    return Publication(version, record)


def gate_and_publish(lake: Lake, product: str, candidate_file: Path, *, run_id: str,
                     inputs: list[dict], layer: str = "shared",
                     gate_result: GateResult | None = None, before_switch=None) -> Publication:
    """Validate (unless ``gate_result`` is given) then publish ``product``.

    On a failed gate raises ``GateFailed`` naming product, suite and failed expectations;
    ``current`` is untouched, the candidate file and the validation report are kept.
    """
    if gate_result is None or product not in gate_result.suite_results:
        gate_result = validate(lake, layer, {product: Path(candidate_file)}, run_id)
    gate_result.only(product).raise_for_failure(product)
    return publish(lake, product, Path(candidate_file), run_id=run_id,
                   gate_result=gate_result, inputs=inputs, before_switch=before_switch)
