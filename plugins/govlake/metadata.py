"""Dataset metadata, read from the one place it is declared: the dbt source YAML.

``dbt_project/models/staging/<dept>/_<dept>__sources.yml`` describes each department's
datasets (owner, update cycle, delivery format and encoding, columns and the data element
each maps to, sharing type, grades). This module parses those files for the Python side
(DAG factory, extraction, generator, GX suites, masking, catalog), so nothing is declared
twice.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from govlake import config

UPDATE_CYCLES = {
    # cycle -> (Airflow schedule, hours a delivery may be late before the feed is "late")
    "hourly": ("@hourly", 2),
    "daily": ("@daily", 36),
    "weekly": ("@weekly", 8 * 24),
    "monthly": ("@monthly", 32 * 24),
}
GRADES = ("L1", "L2", "L3", "L4")
SHARING_TYPES = ("无条件共享", "有条件共享", "不予共享")


class MetadataError(ValueError):
    """Invalid or missing dataset metadata; the message names file, dataset and key."""


def node_meta(node: dict) -> dict:
    """A dbt YAML node's ``meta``. dbt >= 1.10 puts meta under ``config``; accept the legacy top-level key too."""
    out = dict(node.get("meta") or {})
    out.update((node.get("config") or {}).get("meta") or {})
    return out


@dataclass(frozen=True)
class Column:
    name: str  # the department's column name, as delivered
    element: str  # data element (ASCII) in the standardized layer
    standard: str  # which standardization rule applies
    grade: str | None
    required: bool = False
    value_map: str | None = None
    description: str = ""
    withheld: bool = False  # never shared (products.py: allowed above L2 in a 无条件共享 resource)


@dataclass(frozen=True)
class Dataset:
    dept: str
    name: str
    department: str  # Chinese department name
    department_code: str
    owner: str
    contact: str
    source_system: str
    title: str
    description: str
    update_cycle: str
    delivery: str  # snapshot | incremental
    format: str  # csv | jsonl | xlsx
    encoding: str
    file_pattern: str
    key: tuple[str, ...]
    sharing_type: str
    sharing_condition: str
    legal_basis: str
    columns: tuple[Column, ...]
    yaml_path: Path
    extra: dict = field(default_factory=dict, compare=False, hash=False)

    @property
    def id(self) -> str:
        return f"{self.dept}.{self.name}"

    @property
    def resource(self) -> str:
        """Name of the dataset's shared resource (信息资源): the standardized rows of its current
        state, published like a product (govlake.products.dataset_product)."""
        return f"ds_{self.dept}__{self.name}"

    @property
    def schedule(self) -> str:
        return UPDATE_CYCLES[self.update_cycle][0]

    @property
    def late_after_hours(self) -> int:
        return UPDATE_CYCLES[self.update_cycle][1]

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    @property
    def asset_uri(self) -> str:
        """URI of the Airflow Asset marked when new raw data lands."""
        return f"govlake://raw/{self.dept}/{self.name}"

    def column(self, name: str) -> Column:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(f"{self.id} has no column {name!r}")

    def element(self, element: str) -> Column:
        for c in self.columns:
            if c.element == element:
                return c
        raise KeyError(f"{self.id} has no column mapped to data element {element!r}")


def sources_files(dbt_dir: Path | None = None) -> list[Path]:
    root = (dbt_dir or config.dbt_project_dir()) / "models"
    return sorted(root.rglob("_*__sources.yml"))


def _req(meta: dict, key: str, where: str) -> Any:
    if key not in meta or meta[key] in (None, ""):
        raise MetadataError(f"{where}: meta key {key!r} is missing")
    return meta[key]


def _parse_file(path: Path) -> list[Dataset]:
    doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    out = []
    for src in doc.get("sources") or []:
        smeta = node_meta(src)
        for tbl in src.get("tables") or []:
            where = f"{path}: source {src['name']}.{tbl['name']}"
            tmeta = {**smeta, **node_meta(tbl)}
            cols = []
            for col in tbl.get("columns") or []:
                cmeta = node_meta(col)
                cwhere = f"{where} column {col['name']!r}"
                cols.append(
                    Column(
                        name=str(col["name"]),
                        element=str(_req(cmeta, "element", cwhere)),
                        standard=str(_req(cmeta, "standard", cwhere)),
                        grade=cmeta.get("grade"),
                        required=bool(cmeta.get("required", False)),
                        value_map=cmeta.get("value_map"),
                        description=col.get("description", ""),
                        withheld=cmeta.get("withheld") in (True, "true", "yes", 1),
                    )
                )
            if not cols:
                raise MetadataError(f"{where}: no columns declared")
            cycle = _req(tmeta, "update_cycle", where)
            if cycle not in UPDATE_CYCLES:
                raise MetadataError(f"{where}: update_cycle {cycle!r} not one of {list(UPDATE_CYCLES)}")
            sharing = _req(tmeta, "sharing_type", where)
            if sharing not in SHARING_TYPES:
                raise MetadataError(f"{where}: sharing_type {sharing!r} not one of {SHARING_TYPES}")
            known = {"department", "department_code", "owner", "contact", "source_system", "title",
                     "update_cycle", "delivery", "format", "encoding", "file_pattern", "key",
                     "sharing_type", "sharing_condition", "legal_basis"}
            out.append(
                Dataset(
                    dept=src["name"],
                    name=tbl["name"],
                    department=_req(tmeta, "department", where),
                    department_code=str(tmeta.get("department_code", "")),
                    owner=_req(tmeta, "owner", where),
                    contact=str(tmeta.get("contact", "")),
                    source_system=str(tmeta.get("source_system", "")),
                    title=str(tmeta.get("title", tbl["name"])),
                    description=tbl.get("description", ""),
                    update_cycle=cycle,
                    delivery=str(tmeta.get("delivery", "snapshot")),
                    format=_req(tmeta, "format", where),
                    encoding=_req(tmeta, "encoding", where),
                    file_pattern=str(tmeta.get("file_pattern", "*")),
                    key=tuple(tmeta.get("key") or ()),
                    sharing_type=sharing,
                    sharing_condition=str(tmeta.get("sharing_condition", "")),
                    legal_basis=str(tmeta.get("legal_basis", "")),
                    columns=tuple(cols),
                    yaml_path=path,
                    extra={k: v for k, v in tmeta.items() if k not in known},
                )
            )
    return out


def parse_sources_file(path: Path) -> list[Dataset]:
    """The datasets one source YAML file declares (raises MetadataError naming the file)."""
    return _parse_file(Path(path))


@lru_cache(maxsize=8)
def _load(dbt_dir: str) -> tuple[Dataset, ...]:
    out: list[Dataset] = []
    for f in sources_files(Path(dbt_dir)):
        out.extend(_parse_file(f))
    ids = [d.id for d in out]
    dup = {i for i in ids if ids.count(i) > 1}
    if dup:
        raise MetadataError(f"datasets declared twice: {sorted(dup)}")
    return tuple(sorted(out, key=lambda d: d.id))


def datasets(dbt_dir: Path | None = None) -> list[Dataset]:
    return list(_load(str(dbt_dir or config.dbt_project_dir())))


def dataset(dept: str, name: str | None = None) -> Dataset:
    if name is None and "." in dept:
        dept, name = dept.split(".", 1)
    for d in datasets():
        if d.dept == dept and d.name == name:
            return d
    raise KeyError(f"no dataset {dept}.{name} declared in dbt_project sources")


def departments() -> dict[str, list[Dataset]]:
    out: dict[str, list[Dataset]] = {}
    for d in datasets():
        out.setdefault(d.dept, []).append(d)
    return out
