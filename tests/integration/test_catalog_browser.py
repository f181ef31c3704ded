"""The shared data catalog, opened in a real headless Chromium (Debian's ``chromium``)."""

from __future__ import annotations

import json
import subprocess
from html.parser import HTMLParser

import pytest

import access_support as S
from browser_support import CHROMIUM_FLAGS
from browser_support import chromium as _chromium
from browser_support import png_stats as _png_stats
from govlake import audit
from govlake.site import catalog_pages
from govlake.storage import Lake

pytestmark = [pytest.mark.integration, pytest.mark.browser]

class _Text(HTMLParser):
    def __init__(self):
        super().__init__()
        self.rows: dict[str, str] = {}
        self._cur = None
        self._depth = 0
        self.links: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "tr" and "product-row" in (a.get("class") or ""):
            self._cur = a.get("data-product")
            self.rows[self._cur] = ""
        if tag == "a" and "data-docs" in (a.get("class") or ""):
            self.links.append(a.get("href"))

    def handle_endtag(self, tag):
        if tag == "tr":
            self._cur = None

    def handle_data(self, data):
        if self._cur:
            self.rows[self._cur] += data


@pytest.fixture
def published_catalog(lake: Lake, tmp_path, monkeypatch):
    dbt = S.write_dbt_dir(tmp_path)
    monkeypatch.setenv("GOVLAKE_PROJECT_ROOT", str(tmp_path))
    docs = lake.reports_root / "data_docs" / "index.html"
    docs.parent.mkdir(parents=True, exist_ok=True)
    docs.write_text("<html><body>Data Docs</body></html>", encoding="utf-8")
    rows = S.people(40)
    S.publish(lake, "population_base", rows[:30], created_at="2026-11-23T02:00:00+00:00")
    m = S.publish(lake, "population_base", rows)
    audit.record_publication(lake, m)
    m2 = S.publish(lake, "marriage_household_check", [
        {"id_number": r["id_number"], "name": r["name"], "household_status_code": "20",
         "certificate_number": "J1"} for r in rows[:10]],
        gate={"passed": False, "checks": 12, "failed": 1, "docs_path": str(docs)})
    audit.record_publication(lake, m2)
    index = catalog_pages.build(lake, dbt)
    return lake, index


def test_catalog_json(published_catalog):
    lake, index = published_catalog
    data = json.loads((lake.catalog_root / "catalog.json").read_text(encoding="utf-8"))
    by = {p["name"]: p for p in data["products"]}
    pop = by["population_base"]
    assert pop["title"] == "人口基础库" and pop["owner_department"] == "公安"
    assert pop["sharing"]["type"] == "有条件共享" and pop["sharing"]["condition"]
    assert pop["current_version"] == 2 and pop["row_count"] == 40
    assert [v["version"] for v in pop["versions"]] == [2, 1] and pop["versions"][1]["row_count"] == 30
    assert {c["name"]: c["grade"] for c in pop["columns"]}["id_number"] == "L4"
    assert pop["gate"]["passed"] is True and pop["gate"]["docs_href"] == "../reports/data_docs/index.html"
    assert [l["dept"] for l in pop["lineage"]] == ["public_security", "civil_affairs"]
    assert pop["freshness"]["status"] == "fresh"
    assert by["marriage_household_check"]["gate"]["passed"] is False
    assert by["secret_registry"]["current_version"] is None  # declared, not published
    # the anchor counts every entry: 2 publications, each followed by its signed checkpoint
    assert data["audit_anchor"]["count"] == len(audit.entries(lake)) == 4
    # the catalog page loads nothing from the network
    html = index.read_text(encoding="utf-8")
    assert "http://" not in html and "https://" not in html and "<script" not in html


def test_catalog_in_headless_chromium(published_catalog, tmp_path):
    exe = _chromium()
    lake, index = published_catalog
    profile = tmp_path / "chromium-profile"
    shot = lake.catalog_root / "catalog.png"
    base = [exe, *CHROMIUM_FLAGS, f"--user-data-dir={profile}"]
    dom = subprocess.run(base + ["--dump-dom", index.as_uri()], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    parser = _Text()
    parser.feed(dom.stdout)
    expected = {"population_base": ("人口基础库", "公安", "有条件共享"),
                "marriage_household_check": ("婚姻状况与户籍比对", "民政", "有条件共享"),
                "secret_registry": ("涉密登记簿", "公安", "不予共享")}
    assert set(parser.rows) == set(expected)
    for name, (title, owner, sharing) in expected.items():
        row = parser.rows[name]
        assert title in row and owner in row and sharing in row, row
    assert "v2" in parser.rows["population_base"] and "未通过" in parser.rows["marriage_household_check"]
    assert parser.links and all((lake.catalog_root / l).resolve().is_file() for l in parser.links)

    run = subprocess.run(base + [f"--screenshot={shot}", "--window-size=1280,2000", index.as_uri()],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and shot.is_file(), run.stderr[-2000:]
    w, h, colours, ink = _png_stats(shot)
    assert (w, h) == (1280, 2000)
    assert colours > 20, f"screenshot looks blank: {colours} colours"
    assert ink > 0.05, f"screenshot has almost no content: {ink:.1%} non-background pixels"
