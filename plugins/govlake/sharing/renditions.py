"""Masked renditions: one product version with one treatment vector applied, made once.

A *rendition* is the data of one published version in which every column has been given
the treatment a class of readers needs (``clear``, ``mask``, ``token``, ``withhold`` —
:mod:`govlake.grants`), written as its own Parquet file inside the version directory::

    published/<product>/v=<n>/renditions/<rid>.parquet     (ZSTD, row groups of 122 880, 0440)

The sharing service reads these files with projection and filter pushdown instead of
copying the whole product into DuckDB and masking it with Python UDFs per query
(:mod:`govlake.query`). See docs/adr/0011-renditions.md.

Equality with the per-query path is the contract: every cell of a rendition equals
``masking.mask(element, CAST(value AS VARCHAR), internal)`` /
``masking.token(element or column, …, key, "sha256")`` (``None`` stays ``None``). The build
is DuckDB SQL only (no UDF, no per-row Python):

* masks are ``CASE``/``substring``/``repeat`` and RE2 expressions; Python's ``\\s``, ``\\d``
  and ``str.strip()`` are reproduced with explicit character classes computed from
  :mod:`unicodedata` (RE2's ``\\s``/``\\d`` are ASCII-only);
* join tokens are HMAC-SHA256 computed in SQL,
  ``sha256(K^opad || unhex(sha256(K^ipad || utf8(m))))``, always ``v1:`` (never SM3);
* ``masking._nfkc`` (NFKC + remove whitespace) has no DuckDB counterpart. It is applied with
  ``translate`` over a *verified* character set (ASCII, full-width ASCII, whitespace, CJK
  ideographs and punctuation, …: every character whose NFKC form is itself, one character,
  or whitespace, and which never composes with a neighbour). A value outside that set in a
  column that needs NFKC (id_number, phone, bank_card and uscc masks, every token) stops the
  build with :class:`RenditionError` naming the file, column and row: the rendition is never
  silently different from ``masking``.

The rendition id is a short hash of the sorted (column, treatment, element, internal) tuples,
plus, when the plan has a token column, the token algorithm and key id (``masking.key_id``):
a key rotation makes new token renditions and leaves mask-only ones valid. ``internal`` is
recorded only where it changes the output (masks of ID numbers), so the renditions of two
roles that differ only in department but see the same values are one file.

A rendition of an encrypted data file is itself encrypted (Parquet modular encryption, the
keyring's newest key; DuckDB computes it, pyarrow writes it): docs/adr/0014-encryption-at-rest.md.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import sys
import time
import unicodedata
from concurrent import futures
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Iterable, Iterator, Sequence

from govlake import masking
from govlake.grants import ColumnPlan, Role
from govlake.products import Product

ALGORITHM = "sha256"  # renditions always use HMAC-SHA256 tokens ("v1:")
ROW_GROUP_SIZE = 122_880
RENDITIONS_DIR = "renditions"
FILE_MODE = 0o440
ID_ELEMENTS = ("id_number", "legal_rep_id_number")
# masks that go through masking._nfkc (and so need the verified character set)
NFKC_MASKS = ID_ELEMENTS + ("phone", "bank_card", "uscc")


class RenditionError(RuntimeError):
    """A rendition cannot be built exactly (names file, column, row and rule)."""


# ---- character classes (from Python's own Unicode tables) -------------------------------------
def _ranges(codepoints: Iterable[int]) -> list[tuple[int, int]]:
    out: list[list[int]] = []
    for cp in sorted(set(codepoints)):
        if out and cp == out[-1][1] + 1:
            out[-1][1] = cp
        else:
            out.append([cp, cp])
    return [(a, b) for a, b in out]


def _re2_class_body(codepoints: Iterable[int]) -> str:
    """The inside of an RE2 character class ``[...]`` matching exactly these code points."""
    parts = []
    for a, b in _ranges(codepoints):
        parts.append(f"\\x{{{a:X}}}" if a == b else f"\\x{{{a:X}}}-\\x{{{b:X}}}")
    return "".join(parts)


@lru_cache(maxsize=1)
def _tables() -> dict:
    """Character classes and the NFKC translation, computed once per process."""
    space = [cp for cp in range(sys.maxunicode + 1) if chr(cp).isspace()]
    decimal = [cp for cp in range(sys.maxunicode + 1) if chr(cp).isdecimal()]
    # characters that are the second half of a canonical composition pair
    second: set[str] = set()
    for cp in range(sys.maxunicode + 1):
        d = unicodedata.decomposition(chr(cp))
        if d and not d.startswith("<"):
            parts = d.split()
            if len(parts) == 2:
                second.add(chr(int(parts[1], 16)))
    candidates = (list(range(0x00, 0x80)) + [0xB7] + space
                  + list(range(0x2010, 0x2028)) + list(range(0x3000, 0x3040))
                  + list(range(0x3400, 0x4DC0)) + list(range(0x4E00, 0xA000))
                  + list(range(0xFF01, 0xFF5F)))
    safe, src, dst = [], [], []
    for cp in sorted(set(candidates)):
        c = chr(cp)
        n = unicodedata.normalize("NFKC", c)
        if unicodedata.combining(c) or c in second:
            continue
        if n.isspace():  # removed by _nfkc's whitespace removal, like c itself
            safe.append(cp)
            continue
        if len(n) != 1 or unicodedata.combining(n) or n in second:
            continue
        if n.upper() != n and not ("a" <= n <= "z"):
            continue  # Python's upper() would differ from DuckDB's
        if n.isdigit() and not ("0" <= n <= "9"):
            continue  # str.isdigit() in the 15-digit ID upgrade
        safe.append(cp)
        if n != c:
            src.append(c)
            dst.append(n)
    return {
        "space": _re2_class_body(space),
        "decimal": _re2_class_body(decimal),
        "safe": _re2_class_body(safe),
        "safe_set": frozenset(chr(cp) for cp in safe),
        "tr_from": "".join(src),
        "tr_class": _re2_class_body(ord(c) for c in src),
        "tr_to": "".join(dst),
    }


def nfkc_safe(value: str) -> bool:
    """Whether the SQL NFKC of ``value`` is exact (every character in the verified set)."""
    s = _tables()["safe_set"]
    return all(c in s for c in value)


# ---- SQL building blocks ----------------------------------------------------------------------
lit = masking.sql_literal
ident = masking.sql_ident


class Steps:
    """Staged SQL for one column: each step is computed once, in its own projection level,
    and later steps refer to it by alias (DuckDB would otherwise evaluate a regex nested in
    ``length(x)``/``substring(x)``/``CASE`` once per occurrence)."""

    def __init__(self, prefix: str):
        self.prefix = prefix
        self.steps: list[tuple[str, str]] = []

    def let(self, expr: str) -> str:
        alias = f"{self.prefix}_{len(self.steps)}"
        self.steps.append((alias, expr))
        return ident(alias)


def _strip(b: Steps, v: str) -> str:
    ws = _tables()["space"]
    return b.let(f"regexp_replace({v}, {lit(f'^[{ws}]+|[{ws}]+$')}, '', 'g')")


def _nfkc(b: Steps, v: str, upper: bool = False) -> str:
    t = _tables()
    # translate() is slow (~4 s per million values): only values that have a character to
    # map (full-width forms, …) go through it; standard-form values skip it
    tr = (f"CASE WHEN regexp_matches({v}, {lit('[' + t['tr_class'] + ']')}) "
          f"THEN translate({v}, {lit(t['tr_from'])}, {lit(t['tr_to'])}) ELSE {v} END")
    e = f"regexp_replace({tr}, {lit('[' + t['space'] + ']+')}, '', 'g')"
    return b.let(f"upper({e})" if upper else e)


def _keep(v: str, head: int, tail: int) -> str:
    n = f"length({v})"
    rest = f"substring({v}, {n} - {tail} + 1, {tail})" if tail else "''"
    return (f"CASE WHEN {n} <= {head + tail} THEN repeat('*', {n}) "
            f"ELSE substring({v}, 1, {head}) || repeat('*', {n} - {head + tail}) || {rest} END")


def _phone(b: Steps, v: str) -> str:
    ws = _tables()["space"]
    p = b.let(f"regexp_replace({_nfkc(b, v)}, {lit('[][' + ws + '()（）-]')}, '', 'g')")
    return b.let(
        f"CASE WHEN starts_with({p}, '+86') AND length({p}) = 14 THEN substring({p}, 4) "
        f"WHEN starts_with({p}, '0086') AND length({p}) = 15 THEN substring({p}, 5) "
        f"WHEN starts_with({p}, '86') AND length({p}) = 13 THEN substring({p}, 3) "
        f"ELSE {p} END")


def _id_upgrade(b: Steps, n: str) -> str:
    """normalise_id_number after NFKC+upper: a 15-digit ID gets ``19`` and a check digit."""
    f17 = f"(substring({n}, 1, 6) || '19' || substring({n}, 7))"
    weights = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2]
    total = " + ".join(f"{w} * CAST(substring({f17}, {i + 1}, 1) AS INTEGER)"
                       for i, w in enumerate(weights))
    check = f"substring('10X98765432', (({total}) % 11) + 1, 1)"
    return b.let(f"CASE WHEN length({n}) = 15 AND regexp_full_match({n}, '[0-9]{{15}}') "
                 f"THEN {f17} || {check} ELSE {n} END")


def _address(v: str) -> str:
    t = _tables()
    admin = f"[^省市区县镇乡街路道村号巷弄栋楼室{t['decimal']}{t['space']}]"
    pattern = (f"^(?:{admin}{{2,8}}?(?:省|自治区|特别行政区))?"
               f"(?:{admin}{{1,10}}?(?:市|自治州|地区|盟))?"
               f"(?:{admin}{{1,10}}?(?:自治县|自治旗|林区|特区|区|县|市|旗))?")
    return f"regexp_extract({v}, {lit(pattern)}, 0) || '****'"


def mask_steps(b: Steps, element: str, v: str, internal: bool) -> str:
    """Final SQL (over ``b``'s steps) equal to ``masking.mask(element, v, internal)``."""
    fn = masking.MASKERS.get(element, masking.mask_generic)
    if fn is masking.mask_id_number:
        n = _nfkc(b, v, upper=True)
        return _keep(n, 6, 4) if internal else _keep(n, 1, 1)
    if fn is masking.mask_phone:
        return _keep(_phone(b, v), 3, 4)
    if fn is masking.mask_bank_card:
        return _keep(_nfkc(b, v), 6, 4)
    if fn is masking.mask_uscc:
        return _keep(_nfkc(b, v, upper=True), 8, 2)
    if fn is masking.mask_name:
        s = _strip(b, v)
        return (f"CASE WHEN length({s}) <= 1 THEN repeat('*', length({s})) "
                f"WHEN length({s}) = 2 THEN substring({s}, 1, 1) || '*' "
                f"ELSE substring({s}, 1, 1) || repeat('*', length({s}) - 2) "
                f"|| substring({s}, length({s}), 1) END")
    if fn is masking.mask_address:
        return _address(_strip(b, v))
    if fn is masking.mask_email:
        s = _strip(b, v)
        parts = b.let(f"regexp_extract({s}, '(?s)^(.*)@(.*)$', ['l', 'd'])")
        local, domain = f"{parts}.l", f"{parts}.d"
        return (f"CASE WHEN strpos({s}, '@') = 0 THEN {_keep(s, 1, 0)} "
                f"ELSE (CASE WHEN {local} = '' THEN '***' ELSE substring({local}, 1, 1) || '***' END)"
                f" || '@' || {domain} END")
    if fn is masking.mask_birth_date:
        s = _strip(b, v)
        year = b.let(f"regexp_extract({s}, {lit('^([' + _tables()['decimal'] + ']{4})')}, 1)")
        return f"CASE WHEN {year} <> '' THEN {year} || '-**-**' ELSE '****' END"
    if fn is masking.mask_generic:
        return f"CASE WHEN length({v}) >= 4 THEN {_keep(v, 1, 1)} ELSE repeat('*', length({v})) END"
    raise RenditionError(f"no SQL rendering of the mask for element {element!r} ({fn.__name__}); "
                         "add it to govlake.sharing.renditions.mask_steps")


def normalise_steps(b: Steps, element: str, v: str) -> str:
    """SQL equal to ``masking.normalise(element, v)`` (on the verified character set)."""
    if element in ID_ELEMENTS:
        return _id_upgrade(b, _nfkc(b, v, upper=True))
    if element == "phone":
        return _phone(b, v)
    if element == "uscc":
        return _nfkc(b, v, upper=True)
    return _nfkc(b, v)


def token_steps(b: Steps, element: str, v: str, pads: str = "__k") -> str:
    """SQL equal to ``masking.token(element, v, key, "sha256")``: HMAC-SHA256 as
    ``sha256(K^opad || unhex(sha256(K^ipad || utf8(m))))``; the padded keys are read from the
    one-row table ``pads`` (ipad, opad), never written into the SQL text."""
    msg = f"encode({normalise_steps(b, element, v)})"
    inner = b.let(f"unhex(sha256((SELECT ipad FROM {pads}) || {msg}))")
    return f"'v1:' || sha256((SELECT opad FROM {pads}) || {inner})"


def _needs_nfkc(c: ColumnPlan) -> bool:
    return c.treatment == "token" or (
        c.treatment == "mask" and masking.MASKERS.get(c.element) in
        tuple(masking.MASKERS[e] for e in NFKC_MASKS))


def column_steps(c: ColumnPlan, internal: bool, prefix: str, guard: bool = True) -> tuple[Steps, str]:
    """(the steps, the final expression) of one column of a rendition."""
    b = Steps(prefix)
    col = ident(c.column)
    if c.treatment == "clear":
        return b, col
    if c.treatment == "withhold":
        return b, "CAST(NULL AS VARCHAR)"
    v = b.let(f"CAST({col} AS VARCHAR)")
    if guard and _needs_nfkc(c):
        unsafe = lit("[^" + _tables()["safe"] + "]")
        msg = lit(f"__unsafe__:{c.column}")
        v = b.let(f"CASE WHEN regexp_matches({v}, {unsafe}) THEN error({msg}) ELSE {v} END")
    if c.treatment == "generalize":
        rule = masking.GENERALIZATION.get(c.element)
        if rule == "keep":
            return b, col
        if rule is None:
            return b, "CAST(NULL AS VARCHAR)"
        s = _strip(b, v)
        if rule == "year":
            year = b.let(f"regexp_extract({s}, {lit('^([' + _tables()['decimal'] + ']{4})')}, 1)")
            body = f"CASE WHEN {year} <> '' THEN {year} ELSE NULL END"
        else:  # county: the address's province/city/county names, nothing finer
            county = b.let(_address(s).removesuffix(" || '****'"))
            body = f"CASE WHEN {county} <> '' THEN {county} ELSE NULL END"
        return b, f"CASE WHEN {col} IS NULL THEN NULL ELSE {body} END"
    if c.treatment == "mask":
        body = mask_steps(b, c.element, v, internal)
    elif c.treatment == "token":
        body = token_steps(b, c.element or c.column, v)
    else:
        raise RenditionError(f"unknown treatment {c.treatment!r} for column {c.column!r} "
                             f"(one of {masking.TREATMENTS})")
    return b, f"CASE WHEN {col} IS NULL THEN NULL ELSE {body} END"


def staged_select(outputs: Sequence[tuple[str, Steps, str]], source: str,
                  carry: Sequence[str] = ()) -> str:
    """``SELECT carry, final AS name …`` over nested projections, one per step level (row order
    is kept: projections only)."""
    sql = f"SELECT * FROM {source}"
    depth = max((len(b.steps) for _, b, _ in outputs), default=0)
    for level in range(depth):
        adds = [f"{expr} AS {ident(alias)}" for _, b, _ in outputs
                if level < len(b.steps) for alias, expr in [b.steps[level]]]
        sql = f"SELECT *, {', '.join(adds)} FROM ({sql})"
    finals = [ident(c) for c in carry] + [f"{final} AS {ident(name)}" for name, _, final in outputs]
    return f"SELECT {', '.join(finals)} FROM ({sql})"


def mask_sql(element: str, column: str, internal: bool, source: str, carry=()) -> str:
    """A query over ``source`` giving ``masking.mask(element, column, internal)`` as ``out``
    (for tests and inspection)."""
    b = Steps("__m")
    v = ident(column)
    return staged_select([("out", b, f"CASE WHEN {v} IS NULL THEN NULL ELSE "
                          f"{mask_steps(b, element, v, internal)} END")], source, carry)


def token_sql(element: str, column: str, source: str, carry=()) -> str:
    """A query over ``source`` giving ``masking.token(element, column, key)`` as ``out``."""
    b = Steps("__t")
    v = ident(column)
    return staged_select([("out", b, f"CASE WHEN {v} IS NULL THEN NULL ELSE "
                          f"{token_steps(b, element, v)} END")], source, carry)


# ---- plans and ids ----------------------------------------------------------------------------
def is_internal(role: Role, product_meta: Product | None) -> bool:
    owner = product_meta.owner_department if product_meta else ""
    return bool(role.department) and role.department == owner


def plan_for(role: Role, product_meta: Product | None, product_name: str,
             columns: Sequence[str], internal: bool | None = None) -> tuple[list[ColumnPlan], bool]:
    """(the role's column plan, internal): ``Role.plan`` plus the internal flag of the query path."""
    plan = role.plan(product_meta, product_name, list(columns))
    return plan, is_internal(role, product_meta) if internal is None else bool(internal)


def _effective_internal(c: ColumnPlan, internal: bool) -> bool:
    return bool(internal) and c.treatment == "mask" and \
        masking.MASKERS.get(c.element) is masking.mask_id_number


def has_tokens(plan: Sequence[ColumnPlan]) -> bool:
    return any(c.treatment == "token" for c in plan)


def plan_tuples(plan: Sequence[ColumnPlan], internal: bool) -> list[tuple[str, str, str, bool]]:
    return sorted((c.column, c.treatment, c.element, _effective_internal(c, internal)) for c in plan)


def rendition_id(plan: Sequence[ColumnPlan], internal: bool, key_id: str | None = None) -> str:
    """Short deterministic id of (sorted column tuples, token algorithm, token key id).

    The algorithm and key id count only when the plan has a token column (and then a key id
    is required)."""
    tokens = has_tokens(plan)
    if tokens and not key_id:
        raise RenditionError("a rendition with join tokens needs the token key id")
    doc = {"columns": plan_tuples(plan, internal),
           "alg": ALGORITHM if tokens else "", "key_id": key_id if tokens else ""}
    text = json.dumps(doc, ensure_ascii=True, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("ascii")).hexdigest()[:16]


def plan_doc(plan: Sequence[ColumnPlan], internal: bool, key_id: str | None = None) -> dict:
    """The plan as recorded in the manifest."""
    return {
        "internal": bool(internal),
        "token_algorithm": ALGORITHM if has_tokens(plan) else None,
        "token_key_id": key_id if has_tokens(plan) else None,
        "columns": [{"column": c.column, "treatment": c.treatment, "element": c.element,
                     "internal": _effective_internal(c, internal)} for c in plan],
    }


@dataclass(frozen=True)
class Need:
    """One rendition a product's readers need: a plan, its internal flag, and who needs it."""

    plan: tuple[ColumnPlan, ...]
    internal: bool
    roles: tuple[str, ...]

    @property
    def tokens(self) -> bool:
        return has_tokens(self.plan)

    def rid(self, key_id: str | None) -> str:
        return rendition_id(self.plan, self.internal, key_id)


def _reads(role: Role, product: str, meta: Product | None, today: dt.date) -> bool:
    if role.expired(today):
        return False
    if meta is not None and meta.sharing_type == "不予共享" and role.department != meta.owner_department:
        return False
    if product in role.products:
        return True
    return any(g.product == product and g.state(today) == "active" for g in role.approved)


def needed_plans(product: str, meta: Product | None, roles: dict[str, Role],
                 columns: Sequence[str] | None = None, today: dt.date | None = None) -> list[Need]:
    """The distinct (plan, internal) the readers of ``product`` need.

    ``roles`` as from ``grants.with_approved(grants.load(), access_requests.approved_grants(lake))``;
    ``columns`` are the data's columns (default: the columns the metadata declares). Expired
    roles, revoked or expired approved grants and roles refused by 不予共享 need nothing."""
    if columns is None:
        if meta is None:
            raise RenditionError(f"product {product}: no metadata and no columns given")
        columns = [c.name for c in meta.columns]
    today = today or dt.date.today()
    found: dict[str, tuple[tuple, bool, list[str]]] = {}
    for name in sorted(roles):
        r = roles[name]
        if not _reads(r, product, meta, today):
            continue
        plan, internal = plan_for(r, meta, product, columns)
        key = json.dumps(plan_tuples(plan, internal), ensure_ascii=False)
        if key in found:
            found[key][2].append(name)
        else:
            found[key] = (tuple(plan), internal, [name])
    return [Need(p, i, tuple(rs)) for p, i, rs in found.values()]


# ---- build ------------------------------------------------------------------------------------
def _pads(key: bytes) -> tuple[bytes, bytes]:
    k = hashlib.sha256(key).digest() if len(key) > 64 else key
    k = k.ljust(64, b"\0")
    return bytes(b ^ 0x36 for b in k), bytes(b ^ 0x5C for b in k)


def select_sql(plan: Sequence[ColumnPlan], internal: bool, source: str) -> str:
    """The rendition's SELECT over ``source`` (columns in the plan's order)."""
    outs = []
    for i, c in enumerate(plan):
        b, final = column_steps(c, internal, f"__r{i}")
        outs.append((c.column, b, final))
    return staged_select(outs, source)


def _first_unsafe_row(con, src: str, column: str) -> tuple[int, str]:
    unsafe = lit("[^" + _tables()["safe"] + "]")
    col = ident(column)
    row = con.execute(
        f"SELECT rn, v FROM (SELECT row_number() OVER () AS rn, CAST({col} AS VARCHAR) AS v "
        f"FROM {src}) WHERE regexp_matches(v, {unsafe}) LIMIT 1").fetchone()
    return (int(row[0]), str(row[1])) if row else (0, "")


def build(src_parquet: Path, dest_parquet: Path, plan: Sequence[ColumnPlan], internal: bool,
          key: bytes | None, threads: int | None = None, encrypt: bool | None = None) -> dict:
    """Write the rendition of ``src_parquet`` under ``plan`` to ``dest_parquet`` (atomically:
    a temporary file in the same folder, fsync, rename; mode 0440). Returns
    ``{"rows", "bytes", "sha256", "seconds"}``. Raises RenditionError. ``encrypt``: whether the
    rendition is encrypted (default: when ``src_parquet`` is; publish builds from the plain
    candidate the encrypted data file is made of, concurrently with it)."""
    import duckdb
    import pyarrow as pa

    src_parquet, dest_parquet = Path(src_parquet), Path(dest_parquet)
    if not src_parquet.is_file():
        raise RenditionError(f"{src_parquet}: no such data file")
    if has_tokens(plan) and key is None:
        raise RenditionError(f"{dest_parquet.name}: the plan has join tokens but no key was given")
    t0 = time.monotonic()
    dest_parquet.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest_parquet.with_name(f".{dest_parquet.name}.{os.getpid()}.tmp")
    if tmp.exists():
        tmp.unlink()
    from govlake.sharing import crypto

    # a rendition of an encrypted file is encrypted
    encrypted = crypto.is_encrypted(src_parquet) if encrypt is None else encrypt
    con = duckdb.connect(":memory:")
    key_id = None
    try:
        src = crypto.read_parquet_sql(src_parquet, con, "hive_partitioning = false")
        if threads:
            con.execute(f"SET threads = {int(threads)}")
        con.execute("SET preserve_insertion_order = true")
        cols = [r[0] for r in con.execute(f"DESCRIBE SELECT * FROM {src}").fetchall()]
        missing = [c.column for c in plan if c.column not in cols]
        if missing or not plan:
            raise RenditionError(f"{src_parquet}: the plan names column(s) {missing} that the "
                                 f"data does not have (has {cols})" if missing else
                                 f"{dest_parquet.name}: empty plan")
        by_name = {c.column: c for c in plan}
        # the plan's columns (a grant may cover only some) in the source's column order
        ordered = [by_name[c] for c in cols if c in by_name]
        con.execute("CREATE TEMP TABLE __k (ipad BLOB, opad BLOB)")
        ipad, opad = _pads(key) if key is not None else (b"", b"")
        con.execute("INSERT INTO __k VALUES (?, ?)", [ipad, opad])
        sql = (f"COPY ({select_sql(ordered, internal, src)}) TO {lit(str(tmp))} "
               f"(FORMAT parquet, COMPRESSION zstd, COMPRESSION_LEVEL 1, ROW_GROUP_SIZE {ROW_GROUP_SIZE})")
        try:
            if encrypted:  # DuckDB cannot write encrypted Parquet securely: pyarrow writes it
                reader = con.sql(select_sql(ordered, internal, src)).to_arrow_reader(ROW_GROUP_SIZE)
                key_id = crypto.write_batches(reader, reader.schema, tmp, encrypt=True,
                                              row_group_size=ROW_GROUP_SIZE, compression_level=1)
            else:
                con.execute(sql)
        except (duckdb.Error, pa.ArrowException) as exc:
            msg = str(exc)
            if "__unsafe__:" in msg:
                column = msg.split("__unsafe__:", 1)[1].split()[0].strip("\"'")
                column = next((c for c in cols if msg.split("__unsafe__:", 1)[1].startswith(c)), column)
                rn, value = _first_unsafe_row(con, src, column)
                bad = sorted({ch for ch in value if not nfkc_safe(ch)})
                raise RenditionError(
                    f"{src_parquet}: row {rn}, column {column!r}: value has character(s) "
                    f"{', '.join(f'U+{ord(ch):04X}' for ch in bad)} outside the set whose NFKC "
                    "normalisation the rendition build reproduces in SQL (rule: masked/tokenized "
                    "columns of this element must be in standard form; fix the standardisation "
                    "or extend govlake.sharing.renditions._tables)") from None
            # never echo the SQL (it names the pads table, not the key, but keep messages short)
            raise RenditionError(f"{src_parquet}: building {dest_parquet.name} failed: "
                                 f"{msg.splitlines()[0]}") from None
        rows_src = con.execute(f"SELECT count(*) FROM {src}").fetchone()[0]
        rows_out = con.execute(
            f"SELECT count(*) FROM {crypto.read_parquet_sql(tmp, con)}").fetchone()[0]
    except BaseException:
        con.close()
        tmp.unlink(missing_ok=True)
        raise
    con.close()
    if rows_src != rows_out:
        tmp.unlink(missing_ok=True)
        raise RenditionError(f"{dest_parquet}: wrote {rows_out} rows from {rows_src}")
    h = hashlib.sha256()
    size = 0
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
        while chunk := fh.read(8 << 20):
            h.update(chunk)
            size += len(chunk)
    os.chmod(tmp, FILE_MODE)
    os.rename(tmp, dest_parquet)
    return {"rows": int(rows_out), "bytes": size, "sha256": h.hexdigest(),
            "seconds": round(time.monotonic() - t0, 3), "encryption_key_id": key_id}


# ---- on demand --------------------------------------------------------------------------------
@contextmanager
def _lock(path: Path, timeout: float) -> Iterator[None]:
    from govlake.storage import LockTimeout, exclusive_lock

    try:
        with exclusive_lock(path, timeout):
            yield
    except LockTimeout as e:
        raise RenditionError(str(e)) from e


def data_file(lake, product: str, version: int) -> Path:
    """The data file of a published version (from its manifest)."""
    m = lake.manifest(product, version)
    if not m:
        raise RenditionError(f"{lake.version_dir(product, version)}: no published version "
                             f"(no _manifest.json)")
    files = [f["path"] for f in m.get("files") or []]
    if len(files) != 1:
        raise RenditionError(f"{product} v={version}: renditions need exactly one data file, "
                             f"the manifest lists {files}")
    return lake.version_dir(product, version) / files[0]


def ensure(lake, product: str, version: int, plan: Sequence[ColumnPlan], internal: bool,
           key: bytes | None, lock_timeout: float = 600.0) -> Path:
    """The path of the rendition of ``product`` v=``version`` under ``plan``; built (under a
    lock, atomically) if missing — e.g. for a grant created after publication. A rendition
    built here gets a ``<rid>.json`` sidecar with its rows, sha256 and plan."""
    kid = masking.key_id(key) if key is not None and has_tokens(plan) else None
    rid = rendition_id(plan, internal, kid)
    path = lake.rendition_path(product, version, rid)
    if path.is_file():
        return path
    src = data_file(lake, product, version)
    with _lock(lake.rendition_lock(product, version, rid), lock_timeout):
        if path.is_file():
            return path
        rdir = path.parent
        rdir.mkdir(parents=True, exist_ok=True)
        mode = rdir.stat().st_mode & 0o777
        os.chmod(rdir, mode | 0o700)
        try:
            info = build(src, path, plan, internal, key)
            side = rdir / f"{rid}.json"
            tmp = rdir / f".{rid}.json.{os.getpid()}.tmp"
            tmp.write_text(json.dumps({"id": rid, "path": f"{RENDITIONS_DIR}/{path.name}",
                                       "sha256": info["sha256"], "rows": info["rows"],
                                       "built": "on demand",
                                       "encryption_key_id": info["encryption_key_id"],
                                       "plan": plan_doc(plan, internal, kid)},
                                      ensure_ascii=False, indent=2), encoding="utf-8")
            os.chmod(tmp, FILE_MODE)
            os.rename(tmp, side)
        finally:
            os.chmod(rdir, mode)
    return path


def _run_now(fn, *args) -> futures.Future:
    """``fn(*args)`` run here, now, as a finished future (build_for_publish without an executor).
    A RenditionError is kept for ``.result()`` (the rendition is listed as skipped); any other
    error stops the publication here, before the next rendition is built."""
    f: futures.Future = futures.Future()
    try:
        f.set_result(fn(*args))
    except RenditionError as exc:
        f.set_exception(exc)
    return f


def build_for_publish(staging: Path, data_name: str, product: str, needs: Sequence[Need],
                      key: bytes | None, *, source: Path | None = None, encrypt: bool | None = None,
                      executor=None) -> tuple[list[dict], list[dict]]:
    """Build every needed rendition into ``staging/renditions/`` (publish hook). Returns
    (manifest entries, skipped entries). Without a key, token renditions are skipped; a
    rendition that cannot be built exactly (RenditionError) is skipped with its reason — the
    gated data is still published, and ``ensure`` raises the same error to its readers.

    ``source``: the file the renditions are made from (default ``staging/data_name``; publish
    passes the plain candidate the data file is made of, with ``encrypt`` = whether the data file
    is encrypted). ``executor``: build the renditions concurrently on it (each is a pass over
    the data, mostly one core); entries come back in the order of ``needs`` either way."""
    kid = masking.key_id(key) if key is not None else None
    built, skipped = [], []
    rdir = staging / RENDITIONS_DIR
    src = Path(source) if source is not None else staging / data_name
    submit = executor.submit if executor is not None else _run_now
    jobs: list = []  # (need, rid, dest, future)
    for need in needs:
        if all(c.treatment == "clear" for c in need.plan):
            continue  # nothing to mask: such readers read the data file itself
        if need.tokens and key is None:
            skipped.append({"roles": list(need.roles), "reason": "no join-token key",
                            "plan": plan_doc(need.plan, need.internal, None)})
            continue
        rid = need.rid(kid)
        if any(j[1] == rid for j in jobs):
            continue
        dest = rdir / f"{rid}.parquet"
        jobs.append((need, rid, dest, submit(build, src, dest, need.plan, need.internal, key, None, encrypt)))
    try:
        for need, rid, dest, job in jobs:
            try:
                info = job.result()
            except RenditionError as exc:  # e.g. a value outside the verified NFKC set
                skipped.append({"id": rid, "roles": list(need.roles), "reason": str(exc),
                                "plan": plan_doc(need.plan, need.internal, kid if need.tokens else None)})
                continue
            built.append({"id": rid, "path": f"{RENDITIONS_DIR}/{dest.name}", "sha256": info["sha256"],
                          "bytes": info["bytes"], "rows": info["rows"], "roles": list(need.roles),
                          "encryption_key_id": info["encryption_key_id"],
                          "plan": plan_doc(need.plan, need.internal, kid if need.tokens else None)})
    finally:  # on any other error, no build left running into the caller's staging folder
        futures.wait([j[3] for j in jobs])
    if rdir.is_dir():
        fd = os.open(rdir, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.chmod(rdir, 0o555)
    return built, skipped

