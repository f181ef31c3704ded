"""Grants: which role may read which products, up to which grade, for which purposes, until when.

The grants live in a reviewed configuration file, ``config/grants.yml`` (override with
``$GOVLAKE_GRANTS_FILE``)::

    roles:
      mz_marriage_analyst:
        title: 民政厅婚姻登记处 分析员
        department: 民政            # compared with a product's owner_department (internal masks)
        clearance: L2              # columns graded above this are masked / tokenized / withheld
        purposes: [婚姻登记核验]     # the --purpose given must be one of these
        expires: 2027-06-30        # the grant is refused after this day
        approval: 共享审批〔2026〕002号
        products:
          population_base:
            columns: {id_number: token}   # treatment of above-clearance columns
          marriage_household_check: {}

Treatments of a column graded above the role's clearance: ``mask`` (display mask by data
element, docs/standards.md §6), ``token`` (keyed join token), ``withhold`` (NULL). Without an
explicit entry a column is masked when its element has a mask rule, else withheld. A column
present in the data but absent from the product metadata counts as L4 (most restrictive).

Grants created by approved access requests (``govlake access approve``, kept in
``<lake>/_meta/access.sqlite`` by :mod:`govlake.access_requests`) are merged in at load time
with :func:`with_approved`: each is an :class:`ApprovedGrant` for one product and one purpose,
with its own expiry, an optional column list, and a revocation. The role's clearance (and so
the masking of above-clearance columns) still comes from this file.
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

import yaml

from govlake import config
from govlake.masking import TREATMENTS, default_treatment
from govlake.products import GRADE_RANK, Product


@dataclass(frozen=True)
class ApprovedGrant:
    """One product granted to a role for one purpose by an approved access request."""

    grant_id: str  # e.g. "G-3"
    role: str
    product: str
    purpose: str
    expires: dt.date  # last valid day
    columns: tuple[str, ...] | None = None  # None: every column of the product
    approval: str = ""  # who approved what, for the audit record
    request_id: str = ""
    revoked_at: str | None = None
    revoked_by: str = ""
    revoke_reason: str = ""

    def state(self, today: dt.date | None = None) -> str:
        """``revoked``, ``expired`` or ``active``."""
        if self.revoked_at:
            return "revoked"
        if (today or dt.date.today()) > self.expires:
            return "expired"
        return "active"

    def why_not(self, today: dt.date | None = None) -> str | None:
        """Why the grant no longer gives access (None when it is active)."""
        st = self.state(today)
        if st == "revoked":
            return (f"grant {self.grant_id} was revoked at {self.revoked_at} by {self.revoked_by}: "
                    f"{self.revoke_reason}")
        if st == "expired":
            return f"grant {self.grant_id} expired on {self.expires.isoformat()}"
        return None


class GrantError(ValueError):
    """The grants file is invalid; the message names the file, role and key."""


def grants_file() -> Path:
    env = os.environ.get("GOVLAKE_GRANTS_FILE")
    return Path(env) if env else config.project_root() / "config" / "grants.yml"


@dataclass(frozen=True)
class ColumnPlan:
    column: str
    element: str
    grade: str
    treatment: str  # clear | mask | token | withhold
    declared: bool = True


@dataclass(frozen=True)
class Role:
    name: str
    title: str
    department: str
    clearance: str
    purposes: tuple[str, ...]
    expires: dt.date
    approval: str
    products: dict = field(default_factory=dict, compare=False, hash=False)  # product -> {col: treatment}
    approved: tuple = field(default=(), compare=False, hash=False)  # ApprovedGrant, see with_approved()
    aggregate_only: bool = False  # every query must aggregate; groups under min_group_size suppressed
    min_group_size: int = 10

    def expired(self, today: dt.date | None = None) -> bool:
        return (today or dt.date.today()) > self.expires

    def approved_purpose(self, purpose: str) -> bool:
        """Whether some approved grant (in any state) records ``purpose``."""
        return any(g.purpose == purpose for g in self.approved)

    def approved_grant(self, product: str, purpose: str,
                       today: dt.date | None = None) -> tuple[ApprovedGrant | None, str | None]:
        """(the active approved grant of ``product`` for ``purpose``, None) or (None, why not)."""
        mine = [g for g in self.approved if g.product == product]
        same = [g for g in mine if g.purpose == purpose]
        active = [g for g in same if g.state(today) == "active"]
        if active:  # the one that lasts longest
            return max(active, key=lambda g: (g.expires, g.grant_id)), None
        if same:  # the most recent one explains the refusal
            return None, same[-1].why_not(today)
        if mine:
            return None, (f"not granted to role {self.name} for purpose {purpose!r} (approved for: "
                          f"{', '.join(sorted({g.purpose for g in mine}))})")
        return None, None

    def treatment_override(self, product: str, column: str) -> str | None:
        return (self.products.get(product) or {}).get(column)

    def plan(self, product: Product | None, product_name: str, columns: list[str]) -> list[ColumnPlan]:
        """How each column of a product reaches this role."""
        out = []
        for col in columns:
            meta = product.column(col) if product else None
            grade = meta.grade if meta else "L4"
            element = meta.element if meta else ""
            if GRADE_RANK[grade] <= GRADE_RANK[self.clearance]:
                treatment = "clear"
            elif self.aggregate_only:  # statistics: generalized, never masked or tokenized
                treatment = self.treatment_override(product_name, col) or "generalize"
            else:
                treatment = self.treatment_override(product_name, col) or default_treatment(element)
            out.append(ColumnPlan(col, element, grade, treatment, declared=meta is not None))
        return out


def _parse_date(value, where: str) -> dt.date:
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    try:
        return dt.date.fromisoformat(str(value))
    except ValueError as exc:
        raise GrantError(f"{where}: expires {value!r} is not a date YYYY-MM-DD") from exc


def load(path: Path | None = None) -> dict[str, Role]:
    p = Path(path) if path else grants_file()
    if not p.is_file():
        raise GrantError(f"{p}: grants file not found")
    doc = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    roles = doc.get("roles")
    if not isinstance(roles, dict) or not roles:
        raise GrantError(f"{p}: no 'roles' mapping")
    out: dict[str, Role] = {}
    for name, spec in roles.items():
        where = f"{p}: role {name!r}"
        if not isinstance(spec, dict):
            raise GrantError(f"{where}: must be a mapping")
        for key in ("clearance", "purposes", "expires", "products"):
            if key not in spec or spec[key] in (None, "", [], {}):
                raise GrantError(f"{where}: {key!r} is missing")
        clearance = str(spec["clearance"])
        if clearance not in GRADE_RANK:
            raise GrantError(f"{where}: clearance {clearance!r} is not one of {list(GRADE_RANK)}")
        purposes = spec["purposes"]
        if isinstance(purposes, str):
            purposes = [purposes]
        raw_products = spec["products"]
        if isinstance(raw_products, list):
            raw_products = {str(x): {} for x in raw_products}
        products: dict[str, dict[str, str]] = {}
        for prod, pspec in (raw_products or {}).items():
            cols = ((pspec or {}).get("columns") or {}) if isinstance(pspec, dict) else {}
            for col, treat in cols.items():
                if treat not in TREATMENTS or treat == "clear":
                    raise GrantError(
                        f"{where}: product {prod!r} column {col!r}: treatment {treat!r} is not one of "
                        "mask, token, withhold, generalize (clear access comes only from the clearance level)")
                if treat == "generalize" and not spec.get("aggregate_only"):
                    raise GrantError(f"{where}: product {prod!r} column {col!r}: generalize is for "
                                     "aggregate-only roles (aggregate_only: true)")
                if spec.get("aggregate_only") and treat in ("mask", "token"):
                    raise GrantError(f"{where}: product {prod!r} column {col!r}: an aggregate-only role gets "
                                     f"generalized or withheld values, not {treat}")
            products[str(prod)] = {str(c): str(t) for c, t in cols.items()}
        out[str(name)] = Role(
            name=str(name),
            title=str(spec.get("title") or name),
            department=str(spec.get("department") or ""),
            clearance=clearance,
            purposes=tuple(str(x) for x in purposes),
            expires=_parse_date(spec["expires"], where),
            approval=str(spec.get("approval") or ""),
            products=products,
            aggregate_only=bool(spec.get("aggregate_only", False)),
            min_group_size=_group_size(spec.get("min_group_size", 10), where),
        )
    return out


def _group_size(value, where: str) -> int:
    try:
        k = int(value)
    except (TypeError, ValueError) as exc:
        raise GrantError(f"{where}: min_group_size {value!r} is not a whole number") from exc
    if k < 2:
        raise GrantError(f"{where}: min_group_size {k} must be at least 2 (default 10)")
    return k


def with_approved(roles: dict[str, Role], approved) -> dict[str, Role]:
    """``roles`` with the approved grants (an iterable of :class:`ApprovedGrant`, in any state)
    attached to their role. A grant whose role is no longer in the grants file is dropped: the
    role itself (department, clearance) must still be reviewed and present."""
    by_role: dict[str, list[ApprovedGrant]] = {}
    for g in approved or ():
        by_role.setdefault(g.role, []).append(g)
    out = dict(roles)
    for name, gs in by_role.items():
        if name in out:
            out[name] = replace(out[name], approved=tuple(out[name].approved) + tuple(gs))
    return out
