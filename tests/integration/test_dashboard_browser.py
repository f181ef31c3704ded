"""The operations dashboard page (运行看板), generated from a controlled-clock lake and opened in
a real headless Chromium: it shows the 互联互通率 and every registered department with its
state, the quarantine chart is drawn from the quarantine history, and it links with the
catalog both ways."""

from __future__ import annotations

import datetime as dt
import re
import subprocess
from html.parser import HTMLParser

import pytest
from browser_support import CHROMIUM_FLAGS, chromium, png_stats
from ops_support import deliver, qrow, write_quarantine

import access_support as S
from govlake import catalog, metadata, ops
from govlake.site import catalog_pages, dashboard
from govlake.storage import Lake

pytestmark = [pytest.mark.integration]

UTC = dt.timezone.utc
NOW = dt.datetime(2026, 11, 26, 10, 0, tzinfo=UTC)
EXPECTED_STATES = {"public_security": "on_time", "civil_affairs": "late", "health": "failing",
                   "human_resources": "never_delivered", "market_regulation": "on_time", "tax": "on_time"}
# quarantine runs: run id, time, {feed: distinct quarantined rows}
RUNS = [("tr-1", "2026-11-24T03:00:00Z", {"public_security.household_registration": 4,
                                          "civil_affairs.marriage_registration": 1}),
        ("tr-2", "2026-11-25T03:00:00Z", {"public_security.household_registration": 9,
                                          "health.birth_certificate": 2}),
        ("tr-3", "2026-11-26T03:00:00Z", {"public_security.household_registration": 2,
                                          "civil_affairs.marriage_registration": 6,
                                          "health.birth_certificate": 2})]


@pytest.fixture
def ops_lake(lake: Lake):
    # 公安, 市场监管: delivered yesterday → on time; 税务 weekly, 2 days old → on time
    deliver(lake, "public_security", "household_registration", "2026-11-25", "2026-11-26T02:00:00Z")
    deliver(lake, "market_regulation", "enterprise_registration", "2026-11-25", "2026-11-26T01:00:00Z")
    deliver(lake, "tax", "taxpayer_registration", "2026-11-24", "2026-11-25T01:00:00Z")
    # 民政: data of 11-22 → 82 h old of 36 h → late
    deliver(lake, "civil_affairs", "marriage_registration", "2026-11-22", "2026-11-23T02:00:00Z")
    # 卫健: newest file quarantined → failing; 人社: nothing → never delivered
    deliver(lake, "health", "birth_certificate", "2026-11-24", "2026-11-25T01:00:00Z")
    deliver(lake, "health", "birth_certificate", "2026-11-25", "2026-11-26T01:00:00Z", status="quarantined",
            reason="undecodable", message="byte 0xff at offset 12")
    for run_id, at, per_feed in RUNS:
        rows = []
        for fid, n in per_feed.items():
            dept, dataset = fid.split(".")
            rows += [qrow(dept, dataset, "b1", i) for i in range(n)]
            rows.append(qrow(dept, dataset, "b1", 0, rule="date_valid"))  # same row, 2nd rule: still 1 row
        write_quarantine(lake, run_id, rows, mtime=at)
    S.publish(lake, "population_base", S.people(5), created_at="2026-11-26T04:00:00+00:00")
    return lake


def test_dashboard_content(ops_lake):
    lake = ops_lake
    c = ops.compute(lake, NOW)
    assert {f.dept: f.state for f in c.feeds} == EXPECTED_STATES  # the scenario is what we think
    page = dashboard.build(lake, NOW)
    assert page == lake.catalog_root / "dashboard.html"
    html = page.read_text(encoding="utf-8")
    # offline: nothing loaded from anywhere, no script
    assert not re.search(r"https?://|<script|<link|@import|src=", html), "dashboard loads an external resource"
    data = dashboard.collect(lake, NOW)
    assert data["rate_text"] == "50.0%" and (data["on_time_departments"], data["registered_departments"]) == (3, 6)
    chart = data["chart"]
    assert chart["runs"] == len(RUNS) and [l["run_id"] for l in chart["xlabels"]] == ["tr-1", "tr-2", "tr-3"]
    by = {s["feed"]: s for s in chart["series"]}
    assert set(by) == {ds.id for ds in metadata.datasets()}
    for i, (_, _, per_feed) in enumerate(RUNS):
        for fid, s in by.items():
            assert s["points"][i]["rows"] == per_feed.get(fid, 0), (fid, i)
    # higher count → higher on the chart (smaller y); zero sits on the axis
    ps = by["public_security.household_registration"]["points"]
    assert ps[1]["y"] < ps[0]["y"] < ps[2]["y"]
    assert by["tax.taxpayer_registration"]["points"][0]["y"] == chart["bottom_edge"]
    assert max(s["rows"] for s in ps) <= chart["ymax"]


class _Dom(HTMLParser):
    def __init__(self):
        super().__init__()
        self.rate = ""
        self.depts: dict[str, dict] = {}
        self.links: list[str] = []
        self.polylines: dict[str, int] = {}
        self._in_rate = False
        self._dept = None
        self._series = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        cls = a.get("class") or ""
        if a.get("id") == "connectivity-rate":
            self._in_rate = True
        if tag == "tr" and "dept-row" in cls:
            self._dept = a["data-dept"]
            self.depts[self._dept] = {"state": a.get("data-state"), "text": ""}
        if tag == "a":
            self.links.append(a.get("href"))
        if tag == "g" and "series" in cls:
            self._series = a["data-feed"]
        if tag == "polyline" and self._series:
            self.polylines[self._series] = len(a["points"].split())

    def handle_endtag(self, tag):
        if tag == "tr":
            self._dept = None
        if tag == "div":
            self._in_rate = False
        if tag == "g":
            self._series = None

    def handle_data(self, data):
        if self._in_rate:
            self.rate += data
        if self._dept:
            self.depts[self._dept]["text"] += data


@pytest.mark.browser
def test_dashboard_in_headless_chromium(ops_lake, tmp_path):
    exe = chromium()
    lake = ops_lake
    index = catalog_pages.build(lake)
    page = dashboard.build(lake, NOW)
    base = [exe, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'chromium-profile'}"]
    dom = subprocess.run(base + ["--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    p = _Dom()
    p.feed(dom.stdout)

    assert p.rate.strip() == "50.0%"
    assert "互联互通率" in dom.stdout and "3 / 6" in dom.stdout
    registered = {ds.dept: ds.department for ds in metadata.datasets()}
    assert set(p.depts) == set(registered) == set(EXPECTED_STATES)
    for dept, name in registered.items():
        row = p.depts[dept]
        assert row["state"] == EXPECTED_STATES[dept], (dept, row)
        assert name in row["text"] and ops.STATE_LABELS[EXPECTED_STATES[dept]] in row["text"], row["text"]
    assert "undecodable" in p.depts["health"]["text"]
    # one line per feed through every run of the chart
    assert p.polylines and all(n == len(RUNS) for n in p.polylines.values()), p.polylines
    # linked both ways with the catalog page
    assert "index.html" in p.links and (lake.catalog_root / "index.html").is_file()
    assert 'href="dashboard.html"' in index.read_text(encoding="utf-8")

    shot = tmp_path / "dashboard.png"
    run = subprocess.run(base + [f"--screenshot={shot}", "--window-size=1280,1800", page.as_uri()],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and shot.is_file(), run.stderr[-2000:]
    w, h, colours, ink = png_stats(shot)
    assert (w, h) == (1280, 1800)
    assert colours > 20, f"screenshot looks blank: {colours} colours"
    assert ink > 0.05, f"screenshot has almost no content: {ink:.1%} non-background pixels"
