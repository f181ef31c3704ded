"""Conditional-sharing workflow (有条件共享): access requests, approvals, grants, revocations.

State lives in SQLite at ``<lake>/_meta/access.sqlite`` (``Lake.access_db``); every step is
appended to the tamper-evident audit log in the same transaction (the audit entry is written
before the SQLite commit, so no state change exists without its audit entry). See
docs/adr/0007-access-requests.md.

- :func:`request` — a role (from ``config/grants.yml``) asks for a product for a purpose,
  optionally for some columns only. By the product's ``sharing_type``:
  ``不予共享`` is refused naming the legal basis; ``无条件共享`` is granted at once (no
  approval, recorded as ``auto_granted``, valid :data:`UNCONDITIONAL_DAYS`); ``有条件共享``
  is filed as ``pending``.
- :func:`approve` / :func:`reject` — only an approver registered for the product's
  ``owner_department`` (``config/approvers.yml``) may decide, and never on their own request.
  Approval creates a grant with an expiry, the purpose and the reason recorded.
- :func:`revoke` — an approver of the owning department ends a grant at once.
- :func:`approved_grants` — every grant (active, expired, revoked) as
  :class:`govlake.grants.ApprovedGrant`, merged with the grants file by the query entry point
  (``grants.with_approved``); a revoked or expired grant refuses with its reason.

Refusals (a 不予共享 product, an approver of the wrong department, …) are audited too, as
``<action>_refused``.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import sqlite3
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import yaml

from govlake import audit, config, grants, products
from govlake.storage import Lake

UNCONDITIONAL = "无条件共享"
NOT_SHARED = "不予共享"
UNCONDITIONAL_DAYS = 365  # validity of an automatic grant of a 无条件共享 product
DEFAULT_DAYS = 90
MAX_DAYS = 366  # an approval lasts at most a year; renew by a new request
STATUSES = ("pending", "approved", "rejected", "auto_granted")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS requests (
    id                  INTEGER PRIMARY KEY AUTOINCREMENT,
    role                TEXT NOT NULL,
    product             TEXT NOT NULL,
    purpose             TEXT NOT NULL,
    columns             TEXT,              -- JSON list, NULL = every column
    requester           TEXT NOT NULL,
    requested_at        TEXT NOT NULL,
    owner_department    TEXT NOT NULL,
    sharing_type        TEXT NOT NULL,
    status              TEXT NOT NULL CHECK (status IN ('pending', 'approved', 'rejected', 'auto_granted')),
    decided_by          TEXT,
    decided_department  TEXT,
    decided_at          TEXT,
    decision_reason     TEXT,
    grant_id            INTEGER
);
CREATE TABLE IF NOT EXISTS grants (
    id                  INTEGER PRIMARY KEY AUTOINCREMENT,
    request_id          INTEGER NOT NULL REFERENCES requests(id),
    role                TEXT NOT NULL,
    product             TEXT NOT NULL,
    purpose             TEXT NOT NULL,
    columns             TEXT,
    kind                TEXT NOT NULL CHECK (kind IN ('approved', 'unconditional')),
    granted_by          TEXT NOT NULL,
    granted_department  TEXT NOT NULL,
    granted_at          TEXT NOT NULL,
    expires             TEXT NOT NULL,     -- last valid day, YYYY-MM-DD
    reason              TEXT NOT NULL,
    revoked_at          TEXT,
    revoked_by          TEXT,
    revoked_department  TEXT,
    revoke_reason       TEXT
);
CREATE INDEX IF NOT EXISTS requests_status ON requests(status, owner_department);
CREATE INDEX IF NOT EXISTS grants_role ON grants(role, product);
"""


# ---- errors ---------------------------------------------------------------------------------
class AccessRequestError(ValueError):
    """A request or decision cannot be made; the message says what and why."""


class NotShareable(AccessRequestError):
    """The product is 不予共享: it cannot be requested."""


class NotAuthorized(AccessRequestError):
    """The approver may not decide this request or grant."""


class NotFound(AccessRequestError):
    pass


class InvalidState(AccessRequestError):
    """E.g. approving a request that was already decided, revoking a revoked grant."""


# ---- records --------------------------------------------------------------------------------
def _cols(text: str | None) -> tuple[str, ...] | None:
    return None if text is None else tuple(json.loads(text))


@dataclass(frozen=True)
class Request:
    id: int
    role: str
    product: str
    purpose: str
    columns: tuple[str, ...] | None
    requester: str
    requested_at: str
    owner_department: str
    sharing_type: str
    status: str
    decided_by: str | None = None
    decided_department: str | None = None
    decided_at: str | None = None
    decision_reason: str | None = None
    grant_id: int | None = None

    @property
    def ref(self) -> str:
        return f"R-{self.id}"

    @property
    def grant_ref(self) -> str | None:
        return f"G-{self.grant_id}" if self.grant_id is not None else None

    def to_dict(self) -> dict:
        return {"request_id": self.ref, "role": self.role, "product": self.product, "purpose": self.purpose,
                "columns": list(self.columns) if self.columns is not None else None,
                "requester": self.requester, "requested_at": self.requested_at,
                "owner_department": self.owner_department, "sharing_type": self.sharing_type,
                "status": self.status, "decided_by": self.decided_by,
                "decided_department": self.decided_department, "decided_at": self.decided_at,
                "decision_reason": self.decision_reason, "grant_id": self.grant_ref}

    @classmethod
    def _from_row(cls, row: sqlite3.Row) -> "Request":
        d = dict(row)
        d["columns"] = _cols(d["columns"])
        return cls(**d)


@dataclass(frozen=True)
class Grant:
    id: int
    request_id: int
    role: str
    product: str
    purpose: str
    columns: tuple[str, ...] | None
    kind: str  # approved | unconditional
    granted_by: str
    granted_department: str
    granted_at: str
    expires: dt.date
    reason: str
    revoked_at: str | None = None
    revoked_by: str | None = None
    revoked_department: str | None = None
    revoke_reason: str | None = None

    @property
    def ref(self) -> str:
        return f"G-{self.id}"

    def state(self, today: dt.date | None = None) -> str:
        return self.to_approved().state(today)

    def to_approved(self) -> grants.ApprovedGrant:
        return grants.ApprovedGrant(
            grant_id=self.ref, role=self.role, product=self.product, purpose=self.purpose,
            expires=self.expires, columns=self.columns, request_id=f"R-{self.request_id}",
            approval=(f"R-{self.request_id} {self.kind} by {self.granted_by} ({self.granted_department}) "
                      f"at {self.granted_at}: {self.reason}"),
            revoked_at=self.revoked_at, revoked_by=self.revoked_by or "",
            revoke_reason=self.revoke_reason or "")

    def to_dict(self, today: dt.date | None = None) -> dict:
        return {"grant_id": self.ref, "request_id": f"R-{self.request_id}", "role": self.role,
                "product": self.product, "purpose": self.purpose,
                "columns": list(self.columns) if self.columns is not None else None, "kind": self.kind,
                "granted_by": self.granted_by, "granted_department": self.granted_department,
                "granted_at": self.granted_at, "expires": self.expires.isoformat(), "reason": self.reason,
                "revoked_at": self.revoked_at, "revoked_by": self.revoked_by,
                "revoked_department": self.revoked_department, "revoke_reason": self.revoke_reason,
                "state": self.state(today)}

    @classmethod
    def _from_row(cls, row: sqlite3.Row) -> "Grant":
        d = dict(row)
        d["columns"] = _cols(d["columns"])
        d["expires"] = dt.date.fromisoformat(d["expires"])
        return cls(**d)


# ---- approvers registry ---------------------------------------------------------------------
def approvers_file() -> Path:
    env = os.environ.get("GOVLAKE_APPROVERS_FILE")
    return Path(env) if env else config.project_root() / "config" / "approvers.yml"


def load_approvers(path: Path | None = None) -> dict[str, set[str]]:
    """department → approver identities, from ``config/approvers.yml``::

        departments:
          公安: [王建国]
    """
    p = Path(path) if path else approvers_file()
    if not p.is_file():
        raise AccessRequestError(f"{p}: approvers file not found (no one may decide requests)")
    try:
        doc = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise AccessRequestError(f"{p}: not valid YAML: {exc}") from exc
    deps = doc.get("departments") if isinstance(doc, dict) else None
    if not isinstance(deps, dict):
        raise AccessRequestError(f"{p}: no 'departments' mapping")
    out: dict[str, set[str]] = {}
    for dept, names in deps.items():
        if isinstance(names, str):
            names = [names]
        if not isinstance(names, list) or not all(isinstance(n, str) and n.strip() for n in names):
            raise AccessRequestError(f"{p}: department {dept!r}: approvers must be a list of names")
        out[str(dept)] = {n.strip() for n in names}
    return out


def _authorize(approver: str, department: str, owner: str, what: str, approvers_path: Path | None,
               requester: str | None = None) -> None:
    if not approver or not approver.strip():
        raise NotAuthorized(f"{what}: an approver identity is required (--approver)")
    if department != owner:
        raise NotAuthorized(f"{what}: only an approver of the owning department {owner} may decide; "
                            f"{approver} approves for {department or '(no department)'}")
    registry = load_approvers(approvers_path)
    if approver not in registry.get(owner, set()):
        raise NotAuthorized(f"{what}: {approver} is not a registered approver of {owner} "
                            f"({approvers_path or approvers_file()})")
    if requester is not None and approver == requester:
        raise NotAuthorized(f"{what}: {approver} filed this request and may not decide it")


# ---- storage --------------------------------------------------------------------------------
def _connect(lake: Lake) -> sqlite3.Connection:
    lake.meta_root.mkdir(parents=True, exist_ok=True)
    con = sqlite3.connect(str(lake.access_db), timeout=30, isolation_level=None)
    con.row_factory = sqlite3.Row
    con.execute("PRAGMA synchronous = FULL")
    con.execute("PRAGMA foreign_keys = ON")
    con.executescript(_SCHEMA)
    return con


@contextmanager
def _tx(lake: Lake):
    """One IMMEDIATE transaction: decisions are serialised across processes."""
    con = _connect(lake)
    try:
        con.execute("BEGIN IMMEDIATE")
        try:
            yield con
        except BaseException:
            con.execute("ROLLBACK")
            raise
        con.execute("COMMIT")
    finally:
        con.close()


@contextmanager
def _read(lake: Lake):
    if not lake.access_db.exists():
        yield None
        return
    try:
        con = sqlite3.connect(f"file:{lake.access_db}?mode=ro", uri=True, timeout=30)
    except sqlite3.Error as exc:
        raise AccessRequestError(f"{lake.access_db}: cannot be opened: {exc}") from exc
    con.row_factory = sqlite3.Row
    try:
        yield con
    except sqlite3.Error as exc:
        raise AccessRequestError(f"{lake.access_db}: cannot be read: {exc}") from exc
    finally:
        con.close()


def _now(now: dt.datetime | None) -> tuple[str, dt.date]:
    t = now or dt.datetime.now(dt.timezone.utc)
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.timezone.utc)
    return t.isoformat(timespec="seconds"), (t.date() if now else dt.date.today())


def parse_id(value, prefix: str) -> int:
    """``3``, ``"3"``, ``"R-3"``, ``"r3"`` → 3 (prefix R for requests, G for grants)."""
    if isinstance(value, int):
        return value
    m = re.fullmatch(rf"\s*(?:{prefix}-?)?(\d+)\s*", str(value), flags=re.IGNORECASE)
    if not m:
        raise NotFound(f"{value!r} is not a {'request' if prefix == 'R' else 'grant'} id ({prefix}-<n>)")
    return int(m.group(1))


def _get_request(con, rid: int) -> Request:
    row = con.execute("SELECT * FROM requests WHERE id = ?", (rid,)).fetchone() if con else None
    if row is None:
        raise NotFound(f"request R-{rid} does not exist")
    return Request._from_row(row)


def _get_grant(con, gid: int) -> Grant:
    row = con.execute("SELECT * FROM grants WHERE id = ?", (gid,)).fetchone() if con else None
    if row is None:
        raise NotFound(f"grant G-{gid} does not exist")
    return Grant._from_row(row)


def _refused(lake: Lake, action: str, exc: AccessRequestError, **payload) -> None:
    audit.append(lake, "access_request" if action in ("request", "reject") else "grant_change", {
        "action": f"{action}_refused", "reason": str(exc), "error": type(exc).__name__,
        "actor": audit.actor(), **payload})


# ---- the workflow ---------------------------------------------------------------------------
def request(lake: Lake, role: str, product: str, purpose: str, columns=None, requester: str | None = None, *,
            grants_path: Path | None = None, dbt_dir: Path | None = None,
            now: dt.datetime | None = None) -> Request:
    """File a request of ``role`` for ``product`` for ``purpose`` (optionally some ``columns``).

    Returns the request: ``pending`` (有条件共享) or ``auto_granted`` with its grant
    (无条件共享). Raises NotShareable for a 不予共享 product, AccessRequestError for an unknown
    role / product / column, an empty purpose or a duplicate pending request. Audited either way."""
    requester = (requester or audit.actor()).strip()
    cols = None
    if columns is not None:
        if isinstance(columns, str):
            columns = columns.split(",")
        cols = tuple(dict.fromkeys(c.strip() for c in columns if c and c.strip()))
    payload = {"role": role, "product": product, "purpose": purpose,
               "columns": list(cols) if cols is not None else None, "requester": requester}
    try:
        if not purpose or not str(purpose).strip():
            raise AccessRequestError("a purpose is required (--purpose): what the data will be used for")
        purpose = str(purpose).strip()
        payload["purpose"] = purpose
        if cols is not None and not cols:
            raise AccessRequestError("--columns is empty; omit it to request every column")
        try:
            roles = grants.load(grants_path)
        except grants.GrantError as exc:
            raise AccessRequestError(f"the grants file is invalid: {exc}") from exc
        r = roles.get(role)
        if r is None:
            raise AccessRequestError(f"role {role!r} is not in the grants file {grants_path or grants.grants_file()}"
                                     " (a role's department and clearance are reviewed there first)")
        stamp, today = _now(now)
        if r.expired(today):
            raise AccessRequestError(f"role {role!r} expired on {r.expires.isoformat()}")
        try:
            meta = products.load(dbt_dir)
        except products.ProductMetadataError as exc:
            raise AccessRequestError(f"product metadata is invalid: {exc}") from exc
        pm = meta.get(product)
        if pm is None:
            raise AccessRequestError(f"no such product {product!r} (known: {', '.join(sorted(meta))})")
        payload.update(owner_department=pm.owner_department, sharing_type=pm.sharing_type)
        if pm.sharing_type == NOT_SHARED:
            raise NotShareable(f"{product} ({pm.title}) is {NOT_SHARED} under {pm.legal_basis or '(no legal basis given)'}"
                               f"; it cannot be requested")
        if cols is not None:
            known = [c.name for c in pm.columns]
            unknown = [c for c in cols if c not in known]
            if unknown:
                raise AccessRequestError(f"product {product} has no column {', '.join(unknown)} "
                                         f"(columns: {', '.join(known)})")
        auto = pm.sharing_type == UNCONDITIONAL
        with _tx(lake) as con:
            dup = con.execute("SELECT id FROM requests WHERE role = ? AND product = ? AND purpose = ? "
                              "AND status = 'pending'", (role, product, purpose)).fetchone()
            if dup:
                raise InvalidState(f"request R-{dup[0]} of {role} for {product} ({purpose}) is already pending")
            cols_json = json.dumps(list(cols), ensure_ascii=False) if cols is not None else None
            cur = con.execute(
                "INSERT INTO requests (role, product, purpose, columns, requester, requested_at, owner_department,"
                " sharing_type, status) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (role, product, purpose, cols_json, requester, stamp, pm.owner_department, pm.sharing_type,
                 "auto_granted" if auto else "pending"))
            rid = cur.lastrowid
            extra = {}
            if auto:
                expires = today + dt.timedelta(days=UNCONDITIONAL_DAYS)
                reason = f"{UNCONDITIONAL}: no approval needed"
                g = con.execute(
                    "INSERT INTO grants (request_id, role, product, purpose, columns, kind, granted_by,"
                    " granted_department, granted_at, expires, reason) VALUES (?, ?, ?, ?, ?, 'unconditional',"
                    " ?, ?, ?, ?, ?)",
                    (rid, role, product, purpose, cols_json, "govlake (无条件共享)", pm.owner_department, stamp,
                     expires.isoformat(), reason))
                con.execute("UPDATE requests SET grant_id = ?, decided_by = ?, decided_at = ?, decision_reason = ?"
                            " WHERE id = ?", (g.lastrowid, "govlake (无条件共享)", stamp, reason, rid))
                extra = {"grant_id": f"G-{g.lastrowid}", "expires": expires.isoformat()}
            audit.append(lake, "access_request", {
                "action": "auto_granted" if auto else "requested", "request_id": f"R-{rid}",
                "actor": audit.actor(), **payload, **extra})
            return _get_request(con, rid)
    except AccessRequestError as exc:
        _refused(lake, "request", exc, **payload)
        raise


def _decide_checks(con, rid: int, approver: str, department: str, approvers_path, verb: str) -> Request:
    req = _get_request(con, rid)
    if req.status != "pending":
        raise InvalidState(f"request {req.ref} is {req.status}, not pending; it cannot be {verb}")
    _authorize(approver, department, req.owner_department, f"request {req.ref}", approvers_path,
               requester=req.requester)
    return req


def approve(lake: Lake, request_id, approver: str, department: str, *, reason: str,
            days: int | None = None, expires: dt.date | str | None = None,
            approvers_path: Path | None = None, now: dt.datetime | None = None) -> Grant:
    """Approve a pending request: creates a grant valid until ``expires`` (inclusive; or
    ``days`` from today, default :data:`DEFAULT_DAYS`). Only a registered approver of the
    product's owning department may approve, and not their own request."""
    payload = {"request_id": str(request_id), "approver": approver, "department": department,
               "reason": reason}
    try:
        rid = parse_id(request_id, "R")
        payload["request_id"] = f"R-{rid}"
        if not reason or not str(reason).strip():
            raise AccessRequestError("a reason is required (--reason)")
        stamp, today = _now(now)
        if expires is not None and days is not None:
            raise AccessRequestError("give either an expiry date or a number of days, not both")
        if expires is None:
            d = DEFAULT_DAYS if days is None else int(days)
            if d < 1:
                raise AccessRequestError(f"--days {d}: a grant must last at least one day")
            expires = today + dt.timedelta(days=d)
        elif isinstance(expires, str):
            try:
                expires = dt.date.fromisoformat(expires)
            except ValueError as exc:
                raise AccessRequestError(f"expiry {expires!r} is not a date YYYY-MM-DD") from exc
        if expires < today:
            raise AccessRequestError(f"expiry {expires.isoformat()} is in the past")
        if expires > today + dt.timedelta(days=MAX_DAYS):
            raise AccessRequestError(f"expiry {expires.isoformat()} is more than {MAX_DAYS} days away; "
                                     "grants are renewed by a new request")
        with _tx(lake) as con:
            req = _decide_checks(con, rid, approver, department, approvers_path, "approved")
            cols_json = json.dumps(list(req.columns), ensure_ascii=False) if req.columns is not None else None
            g = con.execute(
                "INSERT INTO grants (request_id, role, product, purpose, columns, kind, granted_by,"
                " granted_department, granted_at, expires, reason) VALUES (?, ?, ?, ?, ?, 'approved', ?, ?, ?, ?, ?)",
                (rid, req.role, req.product, req.purpose, cols_json, approver, department, stamp,
                 expires.isoformat(), str(reason).strip()))
            con.execute("UPDATE requests SET status = 'approved', decided_by = ?, decided_department = ?,"
                        " decided_at = ?, decision_reason = ?, grant_id = ? WHERE id = ?",
                        (approver, department, stamp, str(reason).strip(), g.lastrowid, rid))
            audit.append(lake, "grant_change", {
                "action": "approved", "request_id": req.ref, "grant_id": f"G-{g.lastrowid}", "role": req.role,
                "product": req.product, "purpose": req.purpose,
                "columns": list(req.columns) if req.columns is not None else None,
                "requester": req.requester, "approver": approver, "department": department,
                "expires": expires.isoformat(), "reason": str(reason).strip(), "actor": audit.actor()})
            return _get_grant(con, g.lastrowid)
    except AccessRequestError as exc:
        _refused(lake, "approve", exc, **payload)
        raise


def reject(lake: Lake, request_id, approver: str, department: str, *, reason: str,
           approvers_path: Path | None = None, now: dt.datetime | None = None) -> Request:
    """Reject a pending request with a reason (owning department's registered approver only)."""
    payload = {"request_id": str(request_id), "approver": approver, "department": department,
               "reason": reason}
    try:
        rid = parse_id(request_id, "R")
        payload["request_id"] = f"R-{rid}"
        if not reason or not str(reason).strip():
            raise AccessRequestError("a reason is required (--reason)")
        stamp, _ = _now(now)
        with _tx(lake) as con:
            req = _decide_checks(con, rid, approver, department, approvers_path, "rejected")
            con.execute("UPDATE requests SET status = 'rejected', decided_by = ?, decided_department = ?,"
                        " decided_at = ?, decision_reason = ? WHERE id = ?",
                        (approver, department, stamp, str(reason).strip(), rid))
            audit.append(lake, "access_request", {
                "action": "rejected", "request_id": req.ref, "role": req.role, "product": req.product,
                "purpose": req.purpose, "requester": req.requester, "approver": approver,
                "department": department, "reason": str(reason).strip(), "actor": audit.actor()})
            return _get_request(con, rid)
    except AccessRequestError as exc:
        _refused(lake, "reject", exc, **payload)
        raise


def revoke(lake: Lake, grant_id, approver: str, department: str, *, reason: str,
           approvers_path: Path | None = None, now: dt.datetime | None = None) -> Grant:
    """End a grant now (owning department's registered approver only); queries relying on it
    are refused from then on, naming the revocation."""
    payload = {"grant_id": str(grant_id), "approver": approver, "department": department, "reason": reason}
    try:
        gid = parse_id(grant_id, "G")
        payload["grant_id"] = f"G-{gid}"
        if not reason or not str(reason).strip():
            raise AccessRequestError("a reason is required (--reason)")
        stamp, _ = _now(now)
        with _tx(lake) as con:
            g = _get_grant(con, gid)
            if g.revoked_at:
                raise InvalidState(f"grant {g.ref} was already revoked at {g.revoked_at} by {g.revoked_by}")
            req = _get_request(con, g.request_id)
            _authorize(approver, department, req.owner_department, f"grant {g.ref}", approvers_path)
            con.execute("UPDATE grants SET revoked_at = ?, revoked_by = ?, revoked_department = ?,"
                        " revoke_reason = ? WHERE id = ?", (stamp, approver, department, str(reason).strip(), gid))
            audit.append(lake, "grant_change", {
                "action": "revoked", "grant_id": g.ref, "request_id": f"R-{g.request_id}", "role": g.role,
                "product": g.product, "purpose": g.purpose, "approver": approver, "department": department,
                "reason": str(reason).strip(), "actor": audit.actor()})
            return _get_grant(con, gid)
    except AccessRequestError as exc:
        _refused(lake, "revoke", exc, **payload)
        raise


# ---- reading --------------------------------------------------------------------------------
def get_request(lake: Lake, request_id) -> Request:
    with _read(lake) as con:
        return _get_request(con, parse_id(request_id, "R"))


def get_grant(lake: Lake, grant_id) -> Grant:
    with _read(lake) as con:
        return _get_grant(con, parse_id(grant_id, "G"))


def list_requests(lake: Lake, *, status: str | None = None, department: str | None = None,
                  role: str | None = None) -> list[Request]:
    """Requests, oldest first; ``department`` filters on the owning department (whose
    approvers decide)."""
    if status is not None and status not in STATUSES:
        raise AccessRequestError(f"status {status!r} is not one of {', '.join(STATUSES)}")
    where, args = [], []
    for col, val in (("status", status), ("owner_department", department), ("role", role)):
        if val is not None:
            where.append(f"{col} = ?")
            args.append(val)
    sql = "SELECT * FROM requests" + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY id"
    with _read(lake) as con:
        return [] if con is None else [Request._from_row(r) for r in con.execute(sql, args)]


def list_grants(lake: Lake, *, role: str | None = None, product: str | None = None) -> list[Grant]:
    where, args = [], []
    for col, val in (("role", role), ("product", product)):
        if val is not None:
            where.append(f"{col} = ?")
            args.append(val)
    sql = "SELECT * FROM grants" + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY id"
    with _read(lake) as con:
        return [] if con is None else [Grant._from_row(r) for r in con.execute(sql, args)]


def approved_grants(lake: Lake) -> list[grants.ApprovedGrant]:
    """Every grant (active, expired or revoked) for ``grants.with_approved``. No store: none.
    An unreadable store raises AccessRequestError (the query entry point then refuses)."""
    try:
        return [g.to_approved() for g in list_grants(lake)]
    except (sqlite3.Error, ValueError, KeyError) as exc:
        if isinstance(exc, AccessRequestError):
            raise
        raise AccessRequestError(f"{lake.access_db}: cannot be read: {exc}") from exc
