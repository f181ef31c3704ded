"""Product (published data set) metadata, read from the dbt model YAML.

Published products are the dbt models under ``dbt_project/models`` whose ``meta`` says
``product: true`` (today ``models/shared/_shared__models.yml``). Each product declares its
catalog fields (title, code, owner department, owner, sharing type / condition / legal basis,
update cycle, summary) and each column its sensitivity grade (L1–L4) and data element.

This is the grading check of the build: a product column without a grade, or with a grade
outside L1–L4, or a product without a valid sharing type, is an error that names the file,
the product and the column. Nothing defaults to "public".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml

from govlake import config
from govlake.metadata import GRADES, SHARING_TYPES, node_meta

GRADE_RANK = {g: i + 1 for i, g in enumerate(GRADES)}  # L1=1 … L4=4


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
        cols = []
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
            cols.append(ProductColumn(
                name=cname, grade=str(grade), element=str(cmeta.get("element") or ""),
                description=str(col.get("description") or ""),
                data_type=str(col.get("data_type") or cmeta.get("data_type") or ""),
            ))
        if not cols:
            raise ProductMetadataError(f"{where}: no columns declared (each needs a grade)")
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
        ))
    return out


def load(dbt_dir: Path | None = None, files: list[Path] | None = None) -> dict[str, Product]:
    """All products declared in the dbt model YAML, by name. Raises ProductMetadataError."""
    out: dict[str, Product] = {}
    for f in (files if files is not None else model_files(dbt_dir)):
        for p in _parse_file(Path(f)):
            if p.name in out:
                raise ProductMetadataError(
                    f"product {p.name!r} declared twice: {out[p.name].yaml_path} and {p.yaml_path}")
            out[p.name] = p
    return out


def check(dbt_dir: Path | None = None) -> list[str]:
    """The build's metadata check: returns the product names, or raises naming the problem."""
    return sorted(load(dbt_dir))
