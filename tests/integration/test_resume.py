"""A ``govlake run`` that was interrupted is finished by the next one (no silent exit 0).

One lake runs day 1 (``govlake generate``, 300 people) and gets day 2 delivered by two
departments (the next-day change set of benchmarks/changeset.py, as in test_incremental: new
marriage rows; a household change file with changed addresses, which changes population_base
and marriage_household_check but not legal_entity_base). Each scenario works on its own copy of that lake and is
compared with a copy that ran day 2 undisturbed ("reference"): every current product must hold
the same rows (order-insensitive, DuckDB ``EXCEPT ALL`` both ways) and the same bytes.

- ``--only`` extracts day 2 of the two departments that deliver something new, which skips the
  transform; the next plain run (which lands nothing itself) must publish day 2 and say that it
  is finishing unpublished work.
- ``kill -9`` of ``govlake run`` (a real subprocess) once it reaches a stage (the shared dbt
  build, the publication; more behind ``-m slow``), then a plain run.
- A day with nothing new: the transform publishes no new version; the audit log says
  ``publication_unchanged``.
"""

from __future__ import annotations

import io
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest

from govlake import audit, config, metadata, runner, transform
from govlake_synth import generate
from govlake.storage import sha256_file
from govlake.sharing import crypto
from govlake.storage import Lake
from lake_support import use_lake_root

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import changeset  # noqa: E402

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
DAY1, DAY2, DAY3 = "2026-10-05", "2026-10-06", "2026-10-07"
PEOPLE, SEED = 300, 23
NEW_DEPTS = ["civil_affairs", "public_security"]  # the departments that deliver on day 2


def _copy(src: Lake, dest: Path) -> Lake:
    shutil.copytree(src.root, dest, symlinks=True)
    return Lake(dest)


def _products_state(lake: Lake) -> dict:
    """product -> (current version, sha256 of its file, its versions)."""
    out = {}
    for p in transform.shared_products():
        m = lake.manifest(p)
        out[p] = (lake.current_version(p), m["files"][0]["sha256"] if m else None, lake.versions(p))
    return out


@pytest.fixture(scope="module")
def lakes(tmp_path_factory, airflow_env):
    base_dir = tmp_path_factory.mktemp("resume")
    with use_lake_root(base_dir / "base") as base:
        generate.generate(base, people=PEOPLE, date=DAY1, seed=SEED, progress=False)
        day1 = runner.run_pipeline(DAY1, progress=False)
        assert all(r["state"] == "success" for r in day1), [(r["dag_id"], r["tasks"]) for r in day1]
        changeset.write_next_day(base, DAY1, DAY2)
        for ds in metadata.datasets():
            if ds.dept not in NEW_DEPTS:
                shutil.rmtree(base.landing(ds.dept, ds.name, DAY2))
    day1_state = _products_state(base)
    ref = _copy(base, base_dir / "reference")
    with use_lake_root(ref.root):
        day2 = runner.run_pipeline(DAY2, progress=False)
    assert all(r["state"] == "success" for r in day2), [(r["dag_id"], r["tasks"]) for r in day2]
    ref_state = _products_state(ref)
    changed = [p for p in ref_state if ref_state[p][1] != day1_state[p][1]]
    assert "population_base" in changed, "day 2 changed no product: the scenarios would prove nothing"
    # keep the reference products aside (the last test runs more days on the reference lake)
    ref_files = {p: shutil.copy2(ref.current_dir(p) / ref.manifest(p)["files"][0]["path"], base_dir / f"ref-{p}.parquet")
                 for p in transform.shared_products()}
    yield {"base": base, "ref": ref, "dir": base_dir, "day1_state": day1_state, "ref_state": ref_state,
           "ref_files": {p: Path(f) for p, f in ref_files.items()}, "changed": changed}


def _assert_products_equal_reference(lake: Lake, lakes_: dict) -> None:
    con = duckdb.connect()
    for p, ref_file in lakes_["ref_files"].items():
        cur = lake.current_dir(p)
        assert cur is not None, f"{p}: no current version"
        got = cur / lake.manifest(p)["files"][0]["path"]
        # (an encrypted product, docs/adr/0014, is read through govlake.sharing.crypto)
        a = crypto.read_parquet_sql(got, con, "hive_partitioning = false")
        b = crypto.read_parquet_sql(ref_file, con, "hive_partitioning = false")
        only_got = con.execute(f"select * from {a} except all select * from {b}").fetchall()
        only_ref = con.execute(f"select * from {b} except all select * from {a}").fetchall()
        assert not only_got and not only_ref, (
            f"{p} v={lake.current_version(p)}: {len(only_got)} rows not in the undisturbed run (e.g. "
            f"{only_got[:2]}), {len(only_ref)} rows of the undisturbed run missing (e.g. {only_ref[:2]})")
        if not crypto.is_encrypted(got):  # (encrypted bytes differ by their random nonces)
            assert sha256_file(got) == sha256_file(ref_file), f"{p}: same rows, other bytes"
        # no duplicate publication: at most one orphan version (killed between rename and switch)
        assert len(lake.versions(p)) - len(lakes_["ref_state"][p][2]) in (0, 1), (p, lake.versions(p))


def _resume(lake: Lake, capsys) -> tuple[list[dict], str]:
    """A plain in-process ``govlake run`` of day 2; returns its results and terminal output."""
    capsys.readouterr()
    with use_lake_root(lake.root):
        results = runner.run_pipeline(DAY2, progress=True)
    err = " ".join(capsys.readouterr().err.split())
    assert all(r["state"] == "success" for r in results), [(r["dag_id"], r["tasks"]) for r in results]
    return results, err


def _transform_result(results: list[dict]) -> dict:
    tr = [r for r in results if r["dag_id"] == "transform_shared"]
    assert tr, "the transform did not run: the interrupted day stays unpublished"
    return tr[0]


def test_only_then_plain_run_finishes_unpublished_work(lakes, capsys):
    lake = _copy(lakes["base"], lakes["dir"] / "only")
    with use_lake_root(lake.root):
        results = runner.run_pipeline(DAY2, only=NEW_DEPTS, progress=True)
    err = " ".join(capsys.readouterr().err.split())
    assert [r["dag_id"] for r in results] == [f"extract_{d}" for d in NEW_DEPTS]
    assert _products_state(lake) == lakes["day1_state"], "--only must not publish"
    assert "not run (--only)" in err and "landed batches not yet published" in err, err
    assert "a full `govlake run`" in err, err

    results, err = _resume(lake, capsys)
    landed = runner._landed_batches(results)
    assert not landed, f"the plain run landed {landed}: the scenario needs the batches landed by --only"
    tr = _transform_result(results)
    fin = tr["finishing_unpublished"]
    feeds = {f"{b['dept']}.{b['dataset']}" for b in fin["batches"]}
    assert feeds == {"civil_affairs.marriage_registration", "public_security.household_registration"}, fin
    assert {b["delivery_date"] for b in fin["batches"]} == {DAY2}
    assert "transform_shared: finishing unpublished work — 2 landed batches not yet published" in err, err
    assert f"civil_affairs.marriage_registration: {DAY2}" in err
    _assert_products_equal_reference(lake, lakes)
    assert not runner.unpublished_work(lake).needed


# ------------------------------------------------------------------------------ kill -9
def _new_run_dirs(root: Path, before: set[str]) -> list[Path]:
    return [d for d in root.glob("*") if d.name not in before] if root.is_dir() else []


def _marker(name: str, lake: Lake, before: dict):
    """A predicate on the lake: the killed run has reached the stage ``name``."""
    stamp = DAY2.replace("-", "")
    if name == "late_extraction":  # the last new day-2 batch is in raw/
        return lambda: any(lake.raw("public_security", "household_registration").glob(f"{stamp}-*/*.parquet"))
    if name == "standardized_build":  # dbt is writing the standardized candidate
        return lambda: any(any((d / "standardized").glob("*.parquet"))
                           for d in _new_run_dirs(lake.candidate_root, before["candidate"]))
    if name == "standardized_gate_done":
        return lambda: any((d / "standardized").is_dir() for d in _new_run_dirs(lake.reports_root, before["reports"]))
    if name == "shared_build":  # dbt is writing the shared candidate
        return lambda: any(any((d / "shared").glob("*.parquet"))
                           for d in _new_run_dirs(lake.candidate_root, before["candidate"]))
    if name == "shared_gate_done":
        return lambda: any((d / "shared").is_dir() for d in _new_run_dirs(lake.reports_root, before["reports"]))
    if name == "publish":  # the first changed product (marriage_household_check) has its new version
        return lambda: any((lake.product_dir(p) / "v=2").exists() for p in transform.shared_products())
    raise ValueError(name)


def _kill_at(lake: Lake, stage: str, delay: float, log: Path) -> dict:
    """Start ``govlake run --date DAY2`` on ``lake``; SIGKILL it ``delay`` s after ``stage``."""
    before = {"candidate": {d.name for d in lake.candidate_root.glob("*")},
              "reports": {d.name for d in lake.reports_root.glob("*")}}
    reached = _marker(stage, lake, before)
    env = dict(os.environ, **config.full_env())
    env["GOVLAKE_LAKE_ROOT"] = str(lake.root)
    with open(log, "w") as out:
        proc = subprocess.Popen([str(ROOT / ".venv" / "bin" / "govlake"), "run", "--date", DAY2],
                                cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 300
            while not reached():
                assert proc.poll() is None, (
                    f"govlake run ended (rc {proc.returncode}) before reaching {stage}: {log.read_text()[-3000:]}")
                assert time.monotonic() < deadline, f"{stage} not reached in 300 s"
                time.sleep(0.02)
            time.sleep(delay)
            alive = proc.poll() is None
            os.kill(proc.pid, signal.SIGKILL)
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=30)
    assert alive, f"govlake run finished before the kill at {stage}+{delay:.2f}s: nothing interrupted"
    assert proc.returncode == -signal.SIGKILL
    return _products_state(lake)


def _kill_and_resume(lakes_: dict, stage: str, capsys) -> None:
    rnd = random.Random(f"{stage}-{os.getpid()}-{time.time_ns()}")
    delay = 0.0 if stage == "publish" else rnd.uniform(0.0, 0.4)
    lake = _copy(lakes_["base"], lakes_["dir"] / f"kill-{stage}")
    at_kill = _kill_at(lake, stage, delay, lakes_["dir"] / f"kill-{stage}.log")
    pending = runner.unpublished_work(lake)
    assert pending.needed, f"killed at {stage}+{delay:.2f}s but nothing was left to publish ({at_kill})"
    # the lock of the killed run is free (the kernel dropped it)
    with runner.run_lock(lake):
        pass
    results, err = _resume(lake, capsys)
    if not runner._landed_batches(results):
        # everything was landed by the killed run: the transform runs because of it, and says so
        assert "transform_shared: finishing unpublished work" in err, err
        assert _transform_result(results)["finishing_unpublished"]["batches"], results
    _transform_result(results)
    _assert_products_equal_reference(lake, lakes_)
    assert not runner.unpublished_work(lake).needed, f"killed at {stage}+{delay:.2f}s"


@pytest.mark.parametrize("stage", [
    "shared_build",
    "publish",
    pytest.param("late_extraction", marks=pytest.mark.slow),
    pytest.param("standardized_build", marks=pytest.mark.slow),
    pytest.param("standardized_gate_done", marks=pytest.mark.slow),
    pytest.param("shared_gate_done", marks=pytest.mark.slow),
])
def test_kill_9_then_run_publishes_what_an_undisturbed_run_publishes(lakes, stage, capsys):
    _kill_and_resume(lakes, stage, capsys)


# ------------------------------------------------------------------------------ nothing new
def test_a_day_with_nothing_new_publishes_no_new_version(lakes, capsys):
    """On the reference lake (day 2 published): the next day delivers nothing. The plain run
    does not run the transform; the transform run anyway (as Airflow would on a raw Asset event
    that changed nothing) publishes no version and audits ``publication_unchanged``."""
    lake = lakes["ref"]
    before = _products_state(lake)
    n_audit = len(audit.entries(lake))
    with use_lake_root(lake.root):
        capsys.readouterr()
        results = runner.run_pipeline(DAY3, progress=True)
        err = " ".join(capsys.readouterr().err.split())
        assert "transform_shared" not in [r["dag_id"] for r in results]
        assert "transform_shared: not run — every landed batch is already published" in err
        dags = runner.load_dags()
        tr = runner.run_dag(dags["transform_shared"], runner.logical_datetime(DAY3))
    assert tr["state"] == "success", tr["tasks"]
    assert _products_state(lake) == before, "an unchanged product got a new version"
    pubs = tr["returns"]["publish"]
    assert sorted(p["product"] for p in pubs) == sorted(before)
    for p in pubs:
        assert p["unchanged"] is True and p["version"] == before[p["product"]][0], p
    notes = [e["payload"] for e in audit.entries(lake)[n_audit:] if e["kind"] == "note"
             and e["payload"].get("event") == "publication_unchanged"]
    assert sorted(n["product"] for n in notes) == sorted(before)
    for n in notes:
        assert n["sha256"] == before[n["product"]][1] and n["version"] == before[n["product"]][0]
        assert n["run_id"] == transform.run_id_for(tr["run_id"])
    # (department_connectivity, published by ops_monitor, is not a product of the transform)
    assert not [e["payload"]["product"] for e in audit.entries(lake)[n_audit:] if e["kind"] == "publication"
                and e["payload"].get("product") in before]
    from rich.console import Console

    buf = io.StringIO()
    runner._print_transform(Console(file=buf, width=200), tr, lake)
    assert f"unchanged (v={before['population_base'][0]})" in buf.getvalue()
    assert (lake.catalog_root / "index.html").exists()


# ------------------------------------------------------------------------------ failed transform
def _marriage_file(lake: Lake, event_date: str) -> Path:
    """A delivery dated FUTURE of one marriage (event ``event_date``) of two single people: an
    event after today but not after its delivery date passes the standardized layer and fails
    the shared suite (latest_event_date <= today), as in test_pipeline_e2e."""
    import csv

    pb = lake.current_dir("population_base")
    single = duckdb.connect().execute(
        f"""select id_number, name, gender_code from read_parquet('{pb}/*.parquet')
            where in_household_registration and marital_status_code = '10' order by id_number""").fetchall()
    man = next(p for p in single if p[2] == "1")
    woman = next(p for p in single if p[2] == "2")
    ds = metadata.dataset("civil_affairs.marriage_registration")
    row = {"登记类型": "结婚", "登记日期": event_date, "男方身份证号": man[0], "男方姓名": man[1],
           "女方身份证号": woman[0], "女方姓名": woman[1], "登记机关": "测试婚姻登记处", "证书编号": "J-RETRY-0001"}
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(ds.column_names)
    w.writerow([row[c] for c in ds.column_names])
    d = lake.landing(ds.dept, ds.name, FUTURE)
    d.mkdir(parents=True, exist_ok=True)
    f = d / f"marriage_registration_{FUTURE.replace('-', '')}.csv"
    if f.exists():
        f.chmod(0o644)
    f.write_bytes(buf.getvalue().encode("utf-8-sig"))
    return f


FUTURE = "2031-01-02"


@pytest.mark.slow
def test_failed_transform_is_retried_by_the_next_run(lakes, capsys):
    """The shared gate fails (exit 1 path). The next run delivers nothing new: it must not say
    'not run' but retry the transform and fail again, loudly. Once a corrected redelivery
    supersedes the bad file, a run publishes it."""
    lake = _copy(lakes["ref"], lakes["dir"] / "retry")
    before = _products_state(lake)
    _marriage_file(lake, "2031年1月1日")
    with use_lake_root(lake.root):
        first = runner.run_pipeline(FUTURE, progress=False)
        tr = _transform_result(first)
        assert tr["state"] == "failed" and tr["tasks"]["gate_shared"] == "failed", tr["tasks"]
        capsys.readouterr()
        again = runner.run_pipeline(FUTURE, progress=True)
        err = " ".join(capsys.readouterr().err.split())
        assert not runner._landed_batches(again)
        assert "not run" not in err, err
        assert "transform_shared: finishing unpublished work — 1 landed batch not yet published " \
               f"(civil_affairs.marriage_registration: {FUTURE})" in err, err
        tr = _transform_result(again)
        assert tr["state"] == "failed" and tr["tasks"]["gate_shared"] == "failed", tr["tasks"]
        assert runner.cli_run(type("A", (), {"date": FUTURE, "only": None})()) == 1  # and exits 1
        assert _products_state(lake) == before
        # the corrected redelivery (same name and date, a past event) supersedes the bad batch
        _marriage_file(lake, "2026年1月1日")
        results = runner.run_pipeline(FUTURE, progress=False)
    assert all(r["state"] == "success" for r in results), [(r["dag_id"], r["tasks"]) for r in results]
    assert not runner.unpublished_work(lake).needed
    cur = lake.manifest("marriage_household_check")
    assert any(i["delivery_date"] == FUTURE for i in cur["inputs"]), cur["inputs"]
