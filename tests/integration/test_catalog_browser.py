"""The shared data catalog, opened in a real headless Chromium (Debian's ``chromium``)."""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
import sys
import zlib
from html.parser import HTMLParser
from pathlib import Path

import pytest

import access_support as S
from govlake import audit, catalog
from govlake.storage import Lake

pytestmark = [pytest.mark.integration, pytest.mark.browser]

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--hide-scrollbars"]


def _chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if not exe:
        msg = ("\n" + "!" * 78 + "\n!! chromium NOT FOUND: the catalog browser test is SKIPPED.\n"
               "!! Install it with: apt-get install -y chromium  (.ci/run does this)\n" + "!" * 78)
        print(msg, file=sys.stderr)
        pytest.skip("chromium is not installed (apt-get install -y chromium); catalog browser test skipped")
    return exe


def _png_stats(path: Path) -> tuple[int, int, int, float]:
    """(width, height, distinct colours in a sample, share of non-background pixels):
    a tiny PNG decoder (8-bit RGB/RGBA, non-interlaced), so no imaging dependency is needed."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, ihdr = 8, b"", None
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        ctype = data[pos + 4:pos + 8]
        chunk = data[pos + 8:pos + 8 + length]
        if ctype == b"IHDR":
            ihdr = struct.unpack(">IIBBBBB", chunk)
        elif ctype == b"IDAT":
            idat += chunk
        pos += 12 + length
    w, h, depth, ctype, _, _, interlace = ihdr
    assert depth == 8 and ctype in (2, 6) and interlace == 0, ihdr
    bpp = 3 if ctype == 2 else 4
    raw = zlib.decompress(idat)
    stride = w * bpp
    prev = bytearray(stride)
    rows = []
    i = 0
    for _ in range(h):
        f = raw[i]
        line = bytearray(raw[i + 1:i + 1 + stride])
        i += 1 + stride
        for x in range(stride):
            a = line[x - bpp] if x >= bpp else 0
            b = prev[x]
            c = prev[x - bpp] if x >= bpp else 0
            if f == 1:
                line[x] = (line[x] + a) & 255
            elif f == 2:
                line[x] = (line[x] + b) & 255
            elif f == 3:
                line[x] = (line[x] + (a + b) // 2) & 255
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[x] = (line[x] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        rows.append(bytes(line))
        prev = line
    colours, ink, total = set(), 0, 0
    bg = rows[h - 1][:3]
    for y in range(0, h, 4):
        r = rows[y]
        for x in range(0, w, 4):
            px = r[x * bpp:x * bpp + 3]
            colours.add(px)
            total += 1
            ink += px != bg
    return w, h, len(colours), ink / total


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
    index = catalog.build(lake, dbt)
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
    assert data["audit_anchor"]["count"] == 2
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
