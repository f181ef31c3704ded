"""Product (published data set) metadata, read from the dbt model YAML.

Published products are the dbt models under ``dbt_project/models`` whose ``meta`` says
``product: true`` (today ``models/shared/_shared__models.yml``). Each product declares its
catalog fields (title, code, owner department, owner, sharing type / condition / legal basis,
update cycle, summary) and each column its sensitivity grade (L1–L4) and data element.

Department resources (信息资源): each department's standardized dataset is a resource of the
sharing catalog (共享目录) in its own right, published like the integrated products (gated,
versioned, audited, grantable). Their metadata is *derived*, never written twice: one Product
per dataset of :func:`govlake.metadata.datasets` (the dbt source YAML
``models/staging/<dept>/_<dept>__sources.yml``), named :func:`resource_name` —
``ds_<dept>__<dataset>`` — with the dataset's title (Chinese), owner, sharing type / condition /
legal basis and update cycle, and one column per source column: the data element (ASCII) as the
column name, the source column's grade and element. The dbt model of the same name
(``models/shared/resources/``, macro ``govlake_resource``) writes the file.

This is the grading check of the build: a product column without a grade, or with a grade
outside L1–L4, or a product without a valid sharing type, is an error that names the file,
the product and the column. Nothing defaults to "public".

Sharing type vs grades (docs/adr/0015-sharing-type-and-grades.md) — also checked here, for
products and department resources alike:

- ``无条件共享`` (unconditional: granted on request without approval) ⇒ every column that is
  shared is graded L1 or L2. An L3/L4 column is allowed only when it is *withheld*
  (column meta ``withheld: true``): it is then not part of the resource — not in
  :attr:`Product.columns`, not in the published file (a department resource leaves it out;
  the publisher refuses a candidate file that has it).
- ``有条件共享`` (conditional: approval by the owning department) — any grade; needs a
  ``sharing_condition``.
- ``不予共享`` (not shared outside the owning department) — any grade; needs a ``legal_basis``.

A contradiction is a ProductMetadataError naming the file, the resource and the column, so the
pipeline (``transform.shared_products``), the sharing service and ``govlake catalog`` fail.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import yaml

from govlake import config, metadata
from govlake.metadata import GRADES, SHARING_TYPES, node_meta

GRADE_RANK = {g: i + 1 for i, g in enumerate(GRADES)}  # L1=1 … L4=4
UNCONDITIONAL = "无条件共享"
UNCONDITIONAL_MAX_GRADE = "L2"  # the most sensitive grade a 无条件共享 resource may share


class ProductMetadataError(ValueError):
    """Invalid or missing product metadata; the message names file, product and column."""


@dataclass(frozen=True)
class ProductColumn:
    name: str
    grade: str  # L1..L4
    element: str  # data element (id_number, name, phone, address, …) or "" when none
    description: str = ""
    data_type: str = ""

    @property
    def rank(self) -> int:
        return GRADE_RANK[self.grade]


@dataclass(frozen=True)
class Product:
    name: str  # dbt model name == published product name
    title: str
    code: str
    owner_department: str
    owner: str
    sharing_type: str
    sharing_condition: str
    legal_basis: str
    update_cycle: str
    summary: str
    description: str
    columns: tuple[ProductColumn, ...]
    yaml_path: Path
    extra: dict = field(default_factory=dict, compare=False, hash=False)
    withheld: tuple[ProductColumn, ...] = ()  # declared, never published (see the module doc)
    dataset: str = ""  # dept.dataset for a department resource, "" for an integrated product

    @property
    def grade(self) -> str:
        """The product's grade is the most restrictive of its columns' (就高从严)."""
        return max((c.grade for c in self.columns), key=GRADE_RANK.__getitem__, default="L4")

    def column(self, name: str) -> ProductColumn | None:
        for c in self.columns:
            if c.name == name:
                return c
        return None


def model_files(dbt_dir: Path | None = None) -> list[Path]:
    """dbt model YAML under models/, plus products/ for products built outside dbt (e.g.
    department_connectivity, built by the ops DAG): same format, not parsed by dbt."""
    base = Path(dbt_dir) if dbt_dir else config.dbt_project_dir()
    out: list[Path] = []
    for root in (base / "models", base / "products"):
        out += sorted(p for p in root.rglob("*.yml") if p.is_file())
        out += sorted(p for p in root.rglob("*.yaml") if p.is_file())
    return out


# libyaml's safe loader when PyYAML was built with it (same documents, ~5x faster than the pure
# Python one: the catalog, publish and query service read every model YAML)
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _parse_file(path: Path) -> list[Product]:
    try:
        doc = yaml.load(path.read_text(encoding="utf-8"), Loader=_YAML_LOADER) or {}
    except yaml.YAMLError as exc:
        raise ProductMetadataError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(doc, dict):
        return []
    out: list[Product] = []
    for model in doc.get("models") or []:
        meta = node_meta(model)
        if not meta.get("product"):
            continue
        name = str(model.get("name") or "")
        where = f"{path}: product {name!r}"
        if not name:
            raise ProductMetadataError(f"{path}: a model with meta product: true has no name")
        sharing = meta.get("sharing_type")
        if not sharing:
            raise ProductMetadataError(f"{where}: no sharing_type (one of {', '.join(SHARING_TYPES)})")
        if sharing not in SHARING_TYPES:
            raise ProductMetadataError(
                f"{where}: sharing_type {sharing!r} is not one of {', '.join(SHARING_TYPES)}")
        if sharing == "有条件共享" and not meta.get("sharing_condition"):
            raise ProductMetadataError(f"{where}: sharing_type 有条件共享 needs a sharing_condition")
        if sharing == "不予共享" and not meta.get("legal_basis"):
            raise ProductMetadataError(f"{where}: sharing_type 不予共享 needs a legal_basis")
        cols: list[ProductColumn] = []
        withheld: list[ProductColumn] = []
        seen = set()
        for col in model.get("columns") or []:
            cname = str(col.get("name") or "")
            cmeta = node_meta(col)
            grade = cmeta.get("grade")
            if grade in (None, ""):
                raise ProductMetadataError(
                    f"{where} column {cname!r}: no grade (every product column needs one of "
                    f"{', '.join(GRADES)}; an ungraded column is never treated as public)")
            if grade not in GRADES:
                raise ProductMetadataError(
                    f"{where} column {cname!r}: grade {grade!r} is not one of {', '.join(GRADES)}")
            if cname in seen:
                raise ProductMetadataError(f"{where} column {cname!r}: declared twice")
            seen.add(cname)
            pc = ProductColumn(
                name=cname, grade=str(grade), element=str(cmeta.get("element") or ""),
                description=str(col.get("description") or ""),
                data_type=str(col.get("data_type") or cmeta.get("data_type") or ""),
            )
            (withheld if _is_withheld(cmeta) else cols).append(pc)
        if not cols:
            raise ProductMetadataError(f"{where}: no columns declared (each needs a grade)")
        check_sharing(where, str(sharing), cols)
        known = {"product", "title", "code", "owner_department", "owner", "sharing_type",
                 "sharing_condition", "legal_basis", "update_cycle", "summary"}
        out.append(Product(
            name=name,
            title=str(meta.get("title") or name),
            code=str(meta.get("code") or ""),
            owner_department=str(meta.get("owner_department") or ""),
            owner=str(meta.get("owner") or ""),
            sharing_type=str(sharing),
            sharing_condition=str(meta.get("sharing_condition") or ""),
            legal_basis=str(meta.get("legal_basis") or ""),
            update_cycle=str(meta.get("update_cycle") or ""),
            summary=str(meta.get("summary") or model.get("description") or ""),
            description=str(model.get("description") or ""),
            columns=tuple(cols),
            yaml_path=path,
            extra={k: v for k, v in meta.items() if k not in known},
            withheld=tuple(withheld),
        ))
    return out


def _is_withheld(cmeta: dict) -> bool:
    return cmeta.get("withheld") in (True, "true", "yes", 1)


def check_sharing(where: str, sharing_type: str, columns) -> None:
    """Raise naming the resource (``where``) and the first column whose grade contradicts the
    sharing type: a 无条件共享 resource shares only L1/L2 columns (withheld ones are not in
    ``columns``). 有条件共享 and 不予共享 allow any grade."""
    if sharing_type != UNCONDITIONAL:
        return
    limit = GRADE_RANK[UNCONDITIONAL_MAX_GRADE]
    for c in columns:
        if GRADE_RANK[c.grade] > limit:
            raise ProductMetadataError(
                f"{where} column {c.name!r}: graded {c.grade}, but the sharing_type is {UNCONDITIONAL} "
                f"(granted on request without approval: every shared column must be L1 or "
                f"{UNCONDITIONAL_MAX_GRADE}). Make it 有条件共享 with a sharing_condition, or withhold the "
                f"column (meta withheld: true) — docs/adr/0015-sharing-type-and-grades.md")


# ------------------------------------------------------------------------------ department resources
def resource_name(ds: metadata.Dataset) -> str:
    """ASCII id of a department's standardized dataset as a shared resource."""
    return ds.resource  # ds_<dept>__<dataset>


def dataset_product(ds: metadata.Dataset) -> Product:
    """The department resource of a dataset, derived from its source YAML (nothing declared
    twice): column = data element, grade and element as the source column declares them."""
    name = resource_name(ds)
    where = f"{ds.yaml_path}: resource {name!r} (dataset {ds.id})"
    if ds.sharing_type == "有条件共享" and not ds.sharing_condition:
        raise ProductMetadataError(f"{where}: sharing_type 有条件共享 needs a sharing_condition")
    if ds.sharing_type == "不予共享" and not ds.legal_basis:
        raise ProductMetadataError(f"{where}: sharing_type 不予共享 needs a legal_basis")
    cols: list[ProductColumn] = []
    withheld: list[ProductColumn] = []
    for c in ds.columns:
        if c.grade in (None, ""):
            raise ProductMetadataError(
                f"{where} column {c.element!r} (source column {c.name!r}): no grade (every column "
                f"needs one of {', '.join(GRADES)}; an ungraded column is never treated as public)")
        if c.grade not in GRADES:
            raise ProductMetadataError(
                f"{where} column {c.element!r} (source column {c.name!r}): grade {c.grade!r} is not "
                f"one of {', '.join(GRADES)}")
        pc = ProductColumn(name=c.element, grade=str(c.grade), element=c.element,
                           description=c.description or c.name)
        (withheld if c.withheld else cols).append(pc)
    if not cols:
        raise ProductMetadataError(f"{where}: every column is withheld: nothing to share")
    check_sharing(where, ds.sharing_type, cols)
    return Product(
        name=name,
        title=ds.title,
        code=f"GOVLAKE-DS-{ds.department_code or ds.dept.upper()}-{ds.name.upper()}",
        owner_department=ds.department,
        owner=ds.owner,
        sharing_type=ds.sharing_type,
        sharing_condition=ds.sharing_condition,
        legal_basis=ds.legal_basis,
        update_cycle=ds.update_cycle,
        summary=ds.description or ds.title,
        description=ds.description,
        columns=tuple(cols),
        yaml_path=ds.yaml_path,
        extra={"dataset": ds.id, "key": list(ds.key), "source_system": ds.source_system,
               "source_columns": {c.element: c.name for c in ds.columns}},
        withheld=tuple(withheld),
        dataset=ds.id,
    )


def _dataset_products(dbt_dir: Path | None, files: list[Path] | None) -> list[Product]:
    """One department resource per dataset of the source YAML (of ``files`` when given: the
    ``_*__sources.yml`` among them)."""
    if files is None:
        files = metadata.sources_files(Path(dbt_dir) if dbt_dir else None)
    files = [Path(f) for f in files if Path(f).name.startswith("_") and Path(f).name.endswith("__sources.yml")]
    try:
        # by file state, not metadata.datasets()'s process-lifetime cache: a long-running reader
        # (the sharing service) sees an edited grade at its next metadata reload
        stamp = tuple((str(f), f.stat().st_mtime_ns, f.stat().st_size) for f in files)
        dss = _sources_datasets(stamp)
    except metadata.MetadataError as exc:
        raise ProductMetadataError(str(exc)) from exc
    return [dataset_product(d) for d in dss]


@lru_cache(maxsize=16)
def _sources_datasets(stamp: tuple) -> list:
    out = [d for f, _, _ in stamp for d in metadata.parse_sources_file(Path(f))]
    ids = [d.id for d in out]
    dup = sorted({i for i in ids if ids.count(i) > 1})
    if dup:
        raise metadata.MetadataError(f"datasets declared twice: {dup}")
    return out


def load(dbt_dir: Path | None = None, files: list[Path] | None = None) -> dict[str, Product]:
    """All products declared in the dbt model YAML and one department resource per dataset of
    the source YAML, by name. Raises ProductMetadataError."""
    out: dict[str, Product] = {}
    found = [p for f in (files if files is not None else model_files(dbt_dir)) for p in _parse_file(Path(f))]
    for p in found + _dataset_products(dbt_dir, files):
        if p.name in out:
            raise ProductMetadataError(
                f"product {p.name!r} declared twice: {out[p.name].yaml_path} and {p.yaml_path}")
        out[p.name] = p
    return out


def check(dbt_dir: Path | None = None) -> list[str]:
    """The build's metadata check: returns the product names, or raises naming the problem."""
    return sorted(load(dbt_dir))


def resources(dbt_dir: Path | None = None) -> list[str]:
    """The department resources (one per dataset), by name."""
    return sorted(n for n, p in load(dbt_dir).items() if p.dataset)
