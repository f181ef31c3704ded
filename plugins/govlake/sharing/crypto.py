"""Encryption at rest of published Parquet files (docs/adr/0014-encryption-at-rest.md).

Published files that hold L3/L4 values are written with **Parquet modular encryption**
(AES-GCM, encrypted footer, every column and the footer under one per-file data key — "uniform"
encryption) by pyarrow's ``CryptoFactory`` with a KMS client over a local **keyring**:

* the keyring is a JSON file outside the repository and the lake,
  ``$GOVLAKE_PARQUET_KEYRING`` or ``<work dir>/secrets/parquet-keys.json`` (mode 0600, folder
  0700): master keys ``{"id", "key" (base64, 256 bits), "created_at", "state"}``; the newest
  ``active`` key encrypts, every key (``active`` or ``retired``) decrypts;
* each file gets a random 256-bit data key (DEK), wrapped by the master key with AES-GCM
  (the key id is the associated data) and stored in the file's own footer key material
  (``{"masterKeyID": …, "wrappedDEK": …}``): a file names the key that opens it, so a
  rotation (``govlake keys rotate``) makes new versions use the new key and leaves old versions
  readable with theirs;
* an encrypted file ends in ``PARE`` instead of ``PAR1``: readers tell encrypted from plain
  files by the file itself (``is_encrypted``), so plain files (versions published before this
  change, test fixtures) stay readable.

Readers go through one helper each:

* DuckDB: ``read_parquet_sql(path, con)`` — SQL naming the file's rows: ``read_parquet(…)`` for
  a plain file; for an encrypted one a relation registered in ``con`` (``register``): a
  ``pyarrow.dataset`` over the file that decrypts in memory with the file's data key, which
  DuckDB scans with projection and filter pushdown. DuckDB 2.0.1's own reader cannot be used:
  it fails with "Computed AES tag differs from read AES tag" on pyarrow-encrypted files whose
  column chunks span several pages (from ~100 k rows) and on filtered scans (ADR 0014). DuckDB
  cannot *write* encrypted Parquet securely without the httpfs extension, so writing is
  pyarrow's too;
* pyarrow: ``arrow_read_options(path)`` — ``{"decryption_properties": …}`` or ``{}``;
* writers: ``write_batches`` / ``encrypt_copy`` (pyarrow ``ParquetWriter`` with the encryption
  properties of the newest key).

Nothing here logs or returns a key; error messages name the keyring file and the key id.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import os
import secrets
import stat
import threading
from pathlib import Path
from typing import Iterable

from govlake import config

KEYRING_ENV = "GOVLAKE_PARQUET_KEYRING"
ALGORITHM = "AES_GCM_V1"
SCHEME = "parquet-modular-encryption"
ENCRYPTED_MAGIC = b"PARE"
PLAIN_MAGIC = b"PAR1"
ENCRYPT_GRADES = ("L3", "L4")


class KeyringError(RuntimeError):
    """The keyring is missing, unreadable, malformed, or lacks the key a file names."""


# ---- the keyring -------------------------------------------------------------------------------
def keyring_path() -> Path:
    raw = os.environ.get(KEYRING_ENV)
    return Path(raw).resolve() if raw else config.work_dir() / "secrets" / "parquet-keys.json"


_cache: dict[str, tuple[tuple, dict]] = {}
_cache_lock = threading.Lock()


def _stamp(p: Path) -> tuple:
    st = p.stat()
    return (st.st_size, st.st_mtime_ns, st.st_ino)


def load_keyring(path: Path | None = None) -> dict:
    """``{"keys": [...]}`` from the keyring file (cached until the file changes)."""
    p = Path(path) if path else keyring_path()
    try:
        stamp = _stamp(p)
    except FileNotFoundError:
        raise KeyringError(f"{p}: no Parquet keyring (create one with `govlake keys init` or "
                           f"point ${KEYRING_ENV} at it)") from None
    with _cache_lock:
        hit = _cache.get(str(p))
        if hit and hit[0] == stamp:
            return hit[1]
    mode = stat.S_IMODE(p.stat().st_mode)
    if mode & 0o077:
        raise KeyringError(f"{p}: mode {mode:04o}; the keyring must be readable by its owner only "
                           "(chmod 600)")
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise KeyringError(f"{p}: unreadable keyring ({exc.__class__.__name__})") from None
    keys = doc.get("keys") if isinstance(doc, dict) else None
    if not isinstance(keys, list) or not keys:
        raise KeyringError(f"{p}: no keys (expected {{\"keys\": [{{\"id\", \"key\", ...}}]}})")
    for i, k in enumerate(keys):
        if not isinstance(k, dict) or not k.get("id") or not k.get("key"):
            raise KeyringError(f"{p}: key {i}: needs \"id\" and \"key\"")
        try:
            raw = base64.b64decode(k["key"], validate=True)
        except ValueError:
            raise KeyringError(f"{p}: key {k['id']}: \"key\" is not base64") from None
        if len(raw) not in (16, 24, 32):
            raise KeyringError(f"{p}: key {k['id']}: {len(raw)} bytes; 16, 24 or 32 needed")
    with _cache_lock:
        _cache[str(p)] = (stamp, doc)
    return doc


def _master_key(key_id: str, path: Path | None = None) -> bytes:
    doc = load_keyring(path)
    for k in doc["keys"]:
        if k["id"] == key_id:
            return base64.b64decode(k["key"])
    raise KeyringError(f"{Path(path) if path else keyring_path()}: no key {key_id!r} (the file "
                       "was encrypted with a key this keyring does not hold)")


def current_key_id(path: Path | None = None) -> str:
    """The id of the newest active key (the one new files are encrypted with)."""
    doc = load_keyring(path)
    active = [k for k in doc["keys"] if k.get("state", "active") == "active"]
    if not active:
        raise KeyringError(f"{Path(path) if path else keyring_path()}: no active key "
                           "(run `govlake keys rotate`)")
    return active[-1]["id"]


def _write_keyring(p: Path, doc: dict) -> None:
    p.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = p.with_name(f".{p.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, json.dumps(doc, indent=2).encode("ascii"))
        os.fsync(fd)
    finally:
        os.close(fd)
    os.chmod(tmp, 0o600)
    os.rename(tmp, p)


def _new_key() -> dict:
    now = dt.datetime.now(dt.timezone.utc)
    return {"id": f"pk-{now:%Y%m%dT%H%M%S}-{secrets.token_hex(3)}",
            "key": base64.b64encode(secrets.token_bytes(32)).decode("ascii"),
            "created_at": now.isoformat(timespec="seconds"), "state": "active"}


def ensure_keyring(path: Path | None = None) -> Path:
    """Create a keyring with one fresh key (mode 0600, folder 0700) if none exists; return its
    path. Like ``masking.ensure_local_key`` it never replaces an existing file, also when several
    processes (parallel publish tasks on a fresh clone) race to create it: the complete file is
    linked into place, which fails if another process got there first — whose key is then
    used (a replaced keyring would make the files encrypted under the lost key unreadable)."""
    p = Path(path) if path else keyring_path()
    if p.exists():
        return p
    p.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = p.with_name(f".{p.name}.{os.getpid()}.{threading.get_ident()}.new")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, json.dumps({"version": 1, "keys": [_new_key()]}, indent=2).encode("ascii"))
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.chmod(tmp, 0o600)
        os.link(tmp, p)  # atomic; FileExistsError when another process created it meanwhile
    except FileExistsError:
        pass
    finally:
        tmp.unlink(missing_ok=True)
    return p


def rotate(path: Path | None = None) -> dict:
    """Add a new active key and retire the others (they still decrypt). Returns
    ``{"key_id": new, "retired": [...], "keyring": path}`` (no key material)."""
    p = ensure_keyring(path)
    doc = load_keyring(p)
    retired = []
    for k in doc["keys"]:
        if k.get("state", "active") == "active":
            k["state"] = "retired"
            k["retired_at"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
            retired.append(k["id"])
    new = _new_key()
    doc["keys"].append(new)
    _write_keyring(p, doc)
    with _cache_lock:
        _cache.pop(str(p), None)
    return {"key_id": new["id"], "retired": retired, "keyring": str(p)}


def key_ids(path: Path | None = None) -> list[dict]:
    """The keys' ids, dates and states (no key material)."""
    return [{k2: v for k2, v in k.items() if k2 != "key"} for k in load_keyring(path)["keys"]]


# ---- the KMS client (pyarrow) -----------------------------------------------------------------
def _wrap(dek: bytes, key_id: str) -> str:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    nonce = os.urandom(12)
    return base64.b64encode(nonce + AESGCM(_master_key(key_id)).encrypt(
        nonce, dek, key_id.encode("utf-8"))).decode("ascii")


def _unwrap(wrapped: str, key_id: str) -> bytes:
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    raw = base64.b64decode(wrapped)
    try:
        return AESGCM(_master_key(key_id)).decrypt(raw[:12], raw[12:], key_id.encode("utf-8"))
    except InvalidTag:
        raise KeyringError(f"{keyring_path()}: key {key_id!r} does not open this file's data key "
                           "(wrong key material under that id)") from None


def _factory():
    import pyarrow.parquet.encryption as pe

    class KeyringKms(pe.KmsClient):
        def __init__(self, _cfg):
            pe.KmsClient.__init__(self)

        def wrap_key(self, key_bytes, master_key_identifier):
            return _wrap(bytes(key_bytes), master_key_identifier)

        def unwrap_key(self, wrapped_key, master_key_identifier):
            return _unwrap(wrapped_key, master_key_identifier)

    return pe.CryptoFactory(lambda cfg: KeyringKms(cfg)), pe.KmsConnectionConfig()


_factory_cache: list = []


def _crypto_factory():
    if not _factory_cache:
        _factory_cache.append(_factory())
    return _factory_cache[0]


def encryption_properties(key_id: str | None = None):
    """pyarrow ``FileEncryptionProperties``: uniform AES-GCM, encrypted footer, a fresh 256-bit
    data key wrapped by ``key_id`` (default: the newest active key)."""
    import pyarrow.parquet.encryption as pe

    kid = key_id or current_key_id()
    _master_key(kid)  # fail here, naming the keyring, if it is missing
    factory, kms = _crypto_factory()
    cfg = pe.EncryptionConfiguration(footer_key=kid, uniform_encryption=True, double_wrapping=False,
                                     data_key_length_bits=256, internal_key_material=True,
                                     encryption_algorithm=ALGORITHM)
    return factory.file_encryption_properties(kms, cfg)


def decryption_properties():
    import pyarrow.parquet.encryption as pe

    factory, kms = _crypto_factory()
    return factory.file_decryption_properties(kms, pe.DecryptionConfiguration())


# ---- files -------------------------------------------------------------------------------------
def is_encrypted(path: Path | str) -> bool:
    """Whether the Parquet file has an encrypted footer (ends in ``PARE``)."""
    with open(path, "rb") as fh:
        fh.seek(-4, os.SEEK_END)
        return fh.read(4) == ENCRYPTED_MAGIC


_file_keys: dict[str, tuple[tuple, str, str, bytes]] = {}  # keyring+path -> (stamps, name, key id, DEK)


def key_material(path: Path | str) -> dict:
    """The footer key material of an encrypted file (``masterKeyID``, ``wrappedDEK``, …)."""
    with open(path, "rb") as fh:
        fh.seek(-8, os.SEEK_END)
        tail = fh.read(8)
        n = int.from_bytes(tail[:4], "little")
        fh.seek(-8 - n, os.SEEK_END)
        region = fh.read(n)
    i = region.find(b'{"keyMaterialType"')
    if tail[4:] != ENCRYPTED_MAGIC or i < 0:
        raise KeyringError(f"{path}: not a Parquet file encrypted with keyring key material")
    doc, _ = json.JSONDecoder().raw_decode(region[i:].decode("latin-1"))
    return doc


def file_key_id(path: Path | str) -> str | None:
    """The master key id an encrypted file names, or None for a plain file."""
    return key_material(path)["masterKeyID"] if is_encrypted(path) else None


def _file_key(path: Path | str) -> tuple[str, bytes]:
    """(DuckDB key name, data key) of an encrypted file (cached while the file is unchanged)."""
    p = str(path)
    ring = keyring_path()
    try:  # the cache is per keyring and forgets when the keyring changes (rotation, removal)
        stamp = (_stamp(Path(p)), _stamp(ring))
    except FileNotFoundError:
        stamp = None
    p = f"{ring}\0{p}"
    hit = _file_keys.get(p)
    if hit and hit[0] == stamp:
        return hit[1], hit[3]
    km = key_material(path)
    if km.get("doubleWrapping"):
        raise KeyringError(f"{path}: double-wrapped key material is not supported")
    dek = _unwrap(km["wrappedDEK"], km["masterKeyID"])
    name = "pq_" + hashlib.sha256(km["wrappedDEK"].encode("ascii")).hexdigest()[:24]
    if stamp is not None:
        _file_keys[p] = (stamp, name, km["masterKeyID"], dek)
    return name, dek


def _lit(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


def _ident(s: str) -> str:
    return '"' + s.replace('"', '""') + '"'


_datasets: dict[str, tuple[tuple, object]] = {}  # keyring+path -> (stamps, pyarrow dataset)
_datasets_lock = threading.Lock()


def arrow_dataset(path: Path | str, columns: list[str] | None = None):
    """A ``pyarrow.dataset`` over the one Parquet file ``path``; for an encrypted file its scans
    decrypt in memory with the file's data key (unwrapped once by the keyring, then
    ``FileDecryptionProperties`` with that key: no KMS call per scan). ``columns``: the
    dataset shows only these columns, in this order (a projection of its schema).

    This is how encrypted files are read with DuckDB (``register``): DuckDB 2.0.1's own Parquet
    reader fails with "Computed AES tag differs from read AES tag" on pyarrow-encrypted files
    whose column chunks span several pages (from ~100 k rows), ADR 0014."""
    import pyarrow as pa
    import pyarrow.dataset as ds

    p = str(path)
    if not is_encrypted(p):
        d = ds.dataset(p, format="parquet")
    else:
        ring = keyring_path()
        try:
            stamp = (_stamp(Path(p)), _stamp(ring))
        except FileNotFoundError:
            stamp = None
        ck = f"{ring}\0{p}"
        with _datasets_lock:
            hit = _datasets.get(ck)
        if hit is not None and stamp is not None and hit[0] == stamp:
            d = hit[1]
        else:
            import pyarrow.parquet.encryption as pe

            _name, dek = _file_key(p)
            opts = ds.ParquetFragmentScanOptions(
                decryption_properties=pe.create_decryption_properties(dek))
            d = ds.dataset(p, format=ds.ParquetFileFormat(default_fragment_scan_options=opts))
            if stamp is not None:
                with _datasets_lock:
                    _datasets[ck] = (stamp, d)
    if columns is not None:
        missing = [c for c in columns if c not in d.schema.names]
        if missing:
            raise KeyError(f"{p}: no column(s) {', '.join(missing)} (has {', '.join(d.schema.names)})")
        d = d.replace_schema(pa.schema([d.schema.field(c) for c in columns]))
    return d


def register(con, name: str, path: Path | str, columns: list[str] | None = None) -> None:
    """Register the Parquet file ``path`` in the DuckDB connection ``con`` as the relation
    ``name`` (only ``columns``, in that order, when given), read through pyarrow
    (``arrow_dataset``): DuckDB scans it with projection and filter pushdown and needs no file
    access (works after ``enable_external_access = false``). Replaces an earlier registration
    of ``name``."""
    _register(con, name, arrow_dataset(path, columns))


def _register(con, name: str, obj) -> None:
    import duckdb

    try:
        con.register(name, obj)
    except duckdb.ResourceInUseException:
        # DuckDB 2 refuses to register while an earlier execute()'s result is unfinished (e.g.
        # after fetchone()); run it to its end first, as executing the next statement would
        con.complete()
        con.register(name, obj)


def _arrow_with_row_number(path: Path | str, column: str):
    """A one-shot ``RecordBatchReader`` over the file's rows in file order with a 0-based
    ``column`` (BIGINT) of row positions (DuckDB's ``file_row_number``)."""
    import pyarrow as pa

    d = arrow_dataset(path)
    schema = d.schema.append(pa.field(column, pa.int64()))

    def gen():
        n = 0
        for b in d.to_batches(use_threads=True):  # in file order
            yield pa.RecordBatch.from_arrays(
                list(b.columns) + [pa.array(range(n, n + b.num_rows), type=pa.int64())], schema=schema)
            n += b.num_rows

    return pa.RecordBatchReader.from_batches(schema, gen())


def read_parquet_sql(path: Path | str, con=None, options: str = "") -> str:
    """SQL naming the rows of the Parquet file ``path``, usable wherever a table is: for a plain
    file ``read_parquet('<path>'[, options])``; for an encrypted one the name of a relation
    registered in ``con`` (required then) that reads it through pyarrow (``register``;
    DuckDB's own reader cannot read pyarrow-encrypted multi-page files, ADR 0014).

    ``options`` is extra named parameters of ``read_parquet``, e.g.
    ``"hive_partitioning = false"``. For an encrypted file only ``hive_partitioning`` (ignored:
    one file) and ``file_row_number = true`` (a ``file_row_number`` column; the relation can
    then be scanned **once**) are supported."""
    args = [_lit(str(path))] + ([options] if options else [])
    if not is_encrypted(path):
        return f"read_parquet({', '.join(args)})"
    if con is None:
        raise KeyringError(f"{path}: encrypted; read_parquet_sql needs the DuckDB connection "
                           "to register it in")
    row_number = False
    for opt in filter(None, (o.strip() for o in options.split(","))):
        k, _, v = (x.strip().lower() for x in opt.partition("="))
        if k == "file_row_number" and v == "true":
            row_number = True
        elif k not in ("hive_partitioning", "file_row_number"):
            raise ValueError(f"{path}: read_parquet option {opt!r} is not supported for an "
                             "encrypted file (read through pyarrow)")
    name = "__govlake_enc_" + hashlib.sha256(str(Path(path).resolve()).encode("utf-8")).hexdigest()[:20]
    if row_number:
        name += "_rn"
        _register(con, name, _arrow_with_row_number(path, "file_row_number"))
    else:
        register(con, name, path)
    return _ident(name)


def configure(con, paths: Iterable[Path | str]) -> None:
    """Register the encrypted files among ``paths`` in ``con`` (``read_parquet_sql``)."""
    for p in paths:
        read_parquet_sql(p, con)


def arrow_read_options(path: Path | str) -> dict:
    """Keyword arguments for pyarrow readers (``pq.read_table``, ``ParquetFile``,
    ``read_schema``, ``read_metadata``) of ``path``: decryption properties when it is encrypted."""
    return {"decryption_properties": decryption_properties()} if is_encrypted(path) else {}


# ---- writing -----------------------------------------------------------------------------------
def write_batches(batches, schema, dest: Path | str, *, encrypt: bool, row_group_size: int,
                  compression: str = "zstd", compression_level: int | None = None,
                  key_id: str | None = None) -> str | None:
    """Write record batches to a new Parquet file ``dest`` (encrypted with the newest key when
    ``encrypt``); returns the key id used (None when plain). Row groups of ``row_group_size``."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    kid = (key_id or current_key_id()) if encrypt else None
    props = encryption_properties(kid) if encrypt else None
    buf: list = []
    n = 0
    with pq.ParquetWriter(str(dest), schema, compression=compression,
                          compression_level=compression_level, encryption_properties=props) as w:
        for b in batches:
            buf.append(b)
            n += b.num_rows
            while n >= row_group_size:
                t = pa.Table.from_batches(buf, schema=schema)
                w.write_table(t.slice(0, row_group_size), row_group_size=row_group_size)
                rest = t.slice(row_group_size)
                buf, n = rest.to_batches(), rest.num_rows
        if n:
            w.write_table(pa.Table.from_batches(buf, schema=schema), row_group_size=row_group_size)
    return kid


def encrypt_copy(src: Path | str, dest: Path | str, key_id: str | None = None) -> str:
    """Rewrite the Parquet file ``src`` as the encrypted file ``dest`` (a new file), keeping its
    schema (with metadata) and row groups; returns the key id."""
    import pyarrow.parquet as pq

    kid = key_id or current_key_id()
    pf = pq.ParquetFile(str(src), **arrow_read_options(src))
    try:
        md = pf.metadata
        codec = md.row_group(0).column(0).compression.lower() if md.num_row_groups and md.num_columns else "zstd"
        codec = codec if codec in ("zstd", "snappy", "gzip", "lz4", "brotli", "none") else "zstd"
        with pq.ParquetWriter(str(dest), pf.schema_arrow, compression=codec,
                              encryption_properties=encryption_properties(kid)) as w:
            for i in range(md.num_row_groups):
                t = pf.read_row_group(i)
                w.write_table(t, row_group_size=max(t.num_rows, 1))
    finally:
        pf.close()
    return kid


def needs_encryption(product: str, columns: list[str] | None = None) -> bool:
    """Whether ``product``'s files must be encrypted: a column graded L3/L4 in the product
    metadata, or no readable metadata for it (fail closed)."""
    from govlake import products

    try:
        meta = products.load().get(product)
    except products.ProductMetadataError:
        return True
    if meta is None:
        return True
    graded = {c.name: c.grade for c in meta.columns}
    cols = columns if columns is not None else list(graded)
    return any(graded.get(c, "L4") in ENCRYPT_GRADES for c in cols)
