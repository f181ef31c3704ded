"""GX Data Docs of a real gate run, opened from ``file://`` in headless Chromium with the network
unreachable: the index must list the run's validation results (rows GX fills in by JavaScript
with jQuery + bootstrap-table) and draw their status icons (Font Awesome glyphs), from the
assets ``govlake.gate`` vendors into the site, not from a CDN.

Chromium is driven through the DevTools protocol over ``--remote-debugging-pipe`` (stdlib only):
the page is measured in the browser (element sizes, loaded fonts, script errors) and every
request the page makes is recorded.
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import json
import os
import re
import select
import subprocess
import time
from pathlib import Path

import duckdb
import pytest
from browser_support import CHROMIUM_FLAGS, chromium

from govlake import gate, metadata

pytestmark = pytest.mark.integration

RUN = "20261124T101500-dd01"
#: no network: every host resolves to nothing and any proxied request goes to a closed port
OFFLINE_FLAGS = ["--proxy-server=127.0.0.1:9", "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1"]


# ---- a minimal DevTools-protocol client over --remote-debugging-pipe (fd 3 in, fd 4 out) -------
class Chromium:
    def __init__(self, exe: str, profile: Path, extra: list[str]):
        to_chrome_r, self._to_chrome = os.pipe()
        self._from_chrome, from_chrome_w = os.pipe()
        # the child's ends are moved above fd 4 first, so dup2 onto 3 and 4 never aliases them
        high = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10) for fd in (to_chrome_r, from_chrome_w)]
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        to_chrome_r, from_chrome_w = high

        def fds():  # in the child: the pipe ends become fd 3 (commands) and fd 4 (replies)
            os.dup2(to_chrome_r, 3)
            os.dup2(from_chrome_w, 4)

        self.proc = subprocess.Popen(
            [exe, *CHROMIUM_FLAGS, *extra, f"--user-data-dir={profile}", "--remote-debugging-pipe",
             "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            preexec_fn=fds, close_fds=False)
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self._buf = b""
        self._id = 0
        self.events: list[dict] = []

    def _read(self, deadline: float) -> dict:
        while b"\0" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no answer from chromium")
            ready, _, _ = select.select([self._from_chrome], [], [], left)
            if ready:
                chunk = os.read(self._from_chrome, 1 << 20)
                if not chunk:
                    raise RuntimeError("chromium closed the pipe: "
                                       + self.proc.stderr.read().decode(errors="replace")[-2000:])
                self._buf += chunk
        msg, self._buf = self._buf.split(b"\0", 1)
        return json.loads(msg)

    def send(self, method: str, params: dict | None = None, session: str | None = None,
             timeout: float = 60) -> dict:
        self._id += 1
        msg = {"id": self._id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self._to_chrome, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            m = self._read(deadline)
            if m.get("id") == self._id:
                if "error" in m:
                    raise RuntimeError(f"{method}: {m['error']}")
                return m["result"]
            self.events.append(m)

    def wait_event(self, method: str, timeout: float = 60) -> dict:
        deadline = time.monotonic() + timeout
        for i, e in enumerate(self.events):
            if e.get("method") == method:
                return self.events.pop(i)
        while True:
            m = self._read(deadline)
            if m.get("method") == method:
                return m
            self.events.append(m)

    def close(self):
        try:
            self.send("Browser.close", timeout=10)
        except Exception:
            pass
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._to_chrome)
        os.close(self._from_chrome)
        self.proc.stderr.close()


_MEASURE = r"""
(async () => {
  await new Promise(r => document.readyState === 'complete' ? r() : addEventListener('load', r));
  await document.fonts.ready;
  await new Promise(r => setTimeout(r, 300));
  const box = el => { const b = el.getBoundingClientRect(); return [b.width, b.height]; };
  const table = document.querySelector('table.ge-index-page-validation-results-table');
  const rows = table ? [...table.querySelectorAll('tbody tr[data-index]')] : [];
  const icons = [...document.querySelectorAll('.ge-success-icon, .ge-failed-icon')];
  const icon = i => ({cls: i.className, box: box(i), glyph: getComputedStyle(i, '::before').content,
                      font: getComputedStyle(i).fontFamily});
  return {
    jquery: typeof window.jQuery === 'function' && typeof jQuery.fn.bootstrapTable === 'function',
    rows: rows.map(tr => ({text: tr.innerText, href: tr.getAttribute('data-href')})),
    icons: icons.map(icon),
    status_icons: [...document.querySelectorAll('i.fas.fa-check-circle, i.fas.fa-times')].map(icon),
    fonts: [...document.fonts].filter(f => f.status === 'loaded').map(f => f.family),
    navbar_height: (document.querySelector('nav.navbar') || {offsetHeight: -1}).offsetHeight,
    suites: [...document.querySelectorAll('table.ge-index-page-expectation_suites-table tbody tr[data-index]')]
              .map(tr => tr.innerText),
  };
})()
"""


def open_offline(exe: str, page: Path, profile: Path) -> tuple[dict, list[str], list[str]]:
    """Open ``page`` with the network unreachable; (measurements, requested URLs, errors)."""
    c = Chromium(exe, profile, OFFLINE_FLAGS)
    try:
        target = c.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        s = c.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Network", "Page", "Runtime", "Log"):
            c.send(f"{domain}.enable", session=s)
        c.send("Page.navigate", {"url": page.as_uri()}, session=s)
        c.wait_event("Page.loadEventFired", timeout=60)
        r = c.send("Runtime.evaluate", {"expression": _MEASURE, "awaitPromise": True,
                                        "returnByValue": True}, session=s, timeout=60)
        assert "exceptionDetails" not in r, r["exceptionDetails"]
        urls = [e["params"]["request"]["url"] for e in c.events
                if e.get("method") == "Network.requestWillBeSent"]
        failed = {e["params"]["requestId"]: e["params"].get("errorText") for e in c.events
                  if e.get("method") == "Network.loadingFailed"}
        ids = {e["params"]["requestId"]: e["params"]["request"]["url"] for e in c.events
               if e.get("method") == "Network.requestWillBeSent"}
        errors = [f"{ids.get(k, k)}: {v}" for k, v in failed.items()]
        errors += [e["params"]["exceptionDetails"].get("exception", {}).get("description", "")
                   or e["params"]["exceptionDetails"].get("text", "") for e in c.events
                   if e.get("method") == "Runtime.exceptionThrown"]
        return r["result"]["value"], urls, errors
    finally:
        c.close()


# ---- a real gate run: one passing and one failing suite in the same run ----------------------
def _write(path: Path, sql: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect()
    try:
        con.execute(f"copy ({sql}) to '{path}' (format parquet)")
    finally:
        con.close()
    return path


@pytest.fixture
def gate_run(lake) -> gate.GateResult:
    d = metadata.dataset("tax", "taxpayer_registration")
    cols = ", ".join(f"null::varchar as {c.element}" for c in d.columns
                     if c.element not in ("uscc", "taxpayer_name", "registration_date"))
    tax = _write(lake.candidate(RUN) / "stg_tax__taxpayer_registration.parquet",
                 f"select '91350200MA2YJ1XR9G' as uscc, '某某公司' as taxpayer_name, "
                 f"date '2020-01-02' as registration_date, {cols}, 'b1' as _batch_id, "
                 f"'f.csv' as _source_file, repeat('a', 64) as _source_sha256, i as _row_number, "
                 f"date '2026-11-24' as _delivery_date from range(3) t(i)")
    # a department outside the registry: expect_column_values_to_be_in_set(dept) fails
    q = _write(lake.candidate(RUN) / "quarantine_rows.parquet",
               "select 'no_such_dept' as dept, 'taxpayer_registration' as dataset, 'b1' as _batch_id, "
               "'f.csv' as _source_file, 9 as _row_number, 'uscc.check_char' as rule, 'uscc' as column, "
               "'91350200MA2YJ1XR9A' as original_value, 'MOD 31 check character' as message")
    res = gate.validate(lake, "standardized",
                        {"stg_tax__taxpayer_registration": tax, "quarantine_rows": q}, RUN)
    assert res.suite_results["stg_tax__taxpayer_registration"].success, res.failure_message()
    q_failed = [f.type + ":" + str(f.column) for f in res.suite_results["quarantine_rows"].failed]
    assert q_failed == ["expect_column_values_to_be_in_set:dept"], res.failure_message()
    return res


@pytest.mark.browser
def test_data_docs_index_renders_offline(gate_run, tmp_path):
    exe = chromium()
    index = gate_run.docs_path
    assert index.is_file()
    m, urls, errors = open_offline(exe, index, tmp_path / "profile")

    # nothing was asked of the network: every request stays on file:// (or inline data:)
    remote = [u for u in urls if not u.startswith(("file://", "data:"))]
    assert not remote, f"the offline Data Docs index requested {remote}"
    assert not errors, f"failed loads / script errors: {errors}"

    # GX fills the validation-results table by JavaScript (jQuery + bootstrap-table)
    assert m["jquery"], "jQuery / bootstrap-table did not load"
    assert len(m["rows"]) == 2, m["rows"]
    for suite in ("standardized.stg_tax__taxpayer_registration", "standardized.quarantine_rows"):
        row = next((r for r in m["rows"] if suite in r["text"]), None)
        assert row is not None, (suite, m["rows"])
        assert RUN in row["text"], row
        assert (index.parent / row["href"]).is_file(), row  # the row links to its page
    assert any("standardized.quarantine_rows" in s for s in m["suites"]) and len(m["suites"]) == 2, m["suites"]

    # status icons: one success and one failure glyph, drawn by the Font Awesome web font
    assert "Font Awesome 6 Free" in m["fonts"], m["fonts"]
    kinds = sorted("success" if "ge-success-icon" in i["cls"] else "failed" for i in m["icons"])
    assert kinds == ["failed", "success"], m["icons"]
    for icon in m["icons"]:
        w, h = icon["box"]
        assert w > 8 and h > 8, f"status icon not drawn: {icon}"  # a missing font draws ~6 px
        assert icon["glyph"] not in ("none", "normal", ""), icon
        assert "Font Awesome" in icon["font"], icon
    assert m["navbar_height"] > 30, "Bootstrap's navbar styles did not apply"


@pytest.mark.browser
def test_failed_validation_page_renders_offline(gate_run, tmp_path):
    """The page of the failing suite: its failed-expectation row shows a drawn failure icon."""
    exe = chromium()
    page = Path(gate_run.suite_results["quarantine_rows"].docs_page)
    m, urls, errors = open_offline(exe, page, tmp_path / "profile")
    remote = [u for u in urls if not u.startswith(("file://", "data:"))]
    assert not remote and not errors, (remote, errors)
    assert m["jquery"] and "Font Awesome 6 Free" in m["fonts"], m
    drawn = {"failed" if "fa-times" in i["cls"] else "success" for i in m["status_icons"]
             if i["box"][0] > 8 and i["box"][1] > 8 and "Font Awesome" in i["font"]}
    assert drawn == {"failed", "success"}, m["status_icons"]
    assert m["navbar_height"] > 30


def _template_asset_urls() -> set[str]:
    import great_expectations

    urls = set()
    for t in (Path(great_expectations.__file__).parent / "render/view/templates").glob("*.j2"):
        urls |= set(re.findall(r'<(?:script|link|img)\b[^>]*?(?:src|href)="(https?://[^"{]+)"',
                               t.read_text(encoding="utf-8")))
    return urls


def test_vendored_assets_are_the_cdn_files():
    """Every remote asset GX's templates load has a vendored copy, each copy is the file the
    manifest names (sha256), and those GX pins with an SRI hash are byte-identical to the CDN's."""
    urls = _template_asset_urls()
    assert len(urls) >= 15, urls
    assert urls <= set(gate.GX_ASSETS), f"GX templates load assets with no vendored copy: {urls - set(gate.GX_ASSETS)}"
    manifest = json.loads((gate.VENDOR_DIR / "MANIFEST.json").read_text(encoding="utf-8"))
    for rel in gate.GX_ASSETS.values():
        assert rel in manifest, rel
    for rel, entry in manifest.items():
        data = (gate.VENDOR_DIR / rel).read_bytes()
        assert hashlib.sha256(data).hexdigest() == entry["sha256"], rel
    import great_expectations

    tpl = (Path(great_expectations.__file__).parent / "render/view/templates/js_script_imports.j2"
           ).read_text(encoding="utf-8")
    pinned = re.findall(r'src="([^"]+)"\s+integrity="sha384-([^"]+)"', tpl)
    assert len(pinned) == 2, pinned  # popper.js and bootstrap.js
    for url, digest in pinned:
        data = (gate.VENDOR_DIR / gate.GX_ASSETS[url]).read_bytes()
        assert base64.b64encode(hashlib.sha384(data).digest()).decode() == digest, url
    # the font files the vendored Font Awesome stylesheet loads are there
    css = gate.VENDOR_DIR / "fontawesome-free/css/all.min.css"
    fonts = set(re.findall(r"url\(([^)]+)\)", css.read_text(encoding="utf-8")))
    assert fonts and all((css.parent / f).resolve().is_file() for f in fonts), fonts


def test_every_local_reference_of_the_site_exists(gate_run):
    site = gate_run.docs_path.parent
    pages = list(site.rglob("*.html"))
    assert len(pages) >= 5
    for page in pages:
        text = page.read_text(encoding="utf-8")
        assert "integrity=" not in text and "crossorigin" not in text, page
        refs = re.findall(r'<(?:script|img)\b[^>]*\bsrc="([^"]+)"|<link\b[^>]*\bhref="([^"]+)"', text)
        assert refs, page
        for ref in refs:
            ref = (ref[0] or ref[1]).split("?")[0]
            assert not ref.startswith(("http:", "https:", "//")), f"{page}: {ref}"
            assert (page.parent / ref).resolve().is_file(), f"{page}: {ref} does not exist"
