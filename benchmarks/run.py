"""govlake benchmark: every pipeline stage and three baselines on the same generated input.

    .venv/bin/python benchmarks/run.py --people 1000000 [--out DIR] [--keep] [--source LAKE]
                                       [--no-spark] [--no-airflow] [--no-incremental]

1. Generates one delivery of the six feeds for ``--people`` people (not timed), or reuses the
   landing zone of ``--source`` (a lake a previous ``govlake generate`` wrote), hard-linked.
2. Runs, each in its own child process so that one's memory does not hide in another's:
   - ``govlake``: the stage functions the Airflow tasks call, in order, on a fresh lake:
     extract (per feed), dbt standardized, gate standardized, dbt shared, gate shared, publish;
     then (``--no-incremental`` skips both) a next-day delivery of 1 % new/changed rows
     (benchmarks/changeset.py) through the same stages: the incremental cost; then a day on which
     one row of the household feed changes (the fixed part of a day: next day = fixed part +
     proportional part); then a day on which nothing is delivered, through the same stages: the part of a day's cost that does not
     depend on the size of the change (fixed costs and whole-table work);
   - ``household``: the govlake stage comparable with the pandas/Spark scripts, alone on another
     fresh lake: extract of the household feed only, then one dbt build of
     ``+stg_public_security__household_registration`` (seed, chk_, stg_ and their tests) with
     the function the pipeline uses (``govlake.dbt.run_dbt``); its wall time is the denominator
     of the pandas/Spark ratios (in the full run the household chk_ node shares the 2 cores with
     chk_ social insurance, dbt threads: 2; that in-pipeline figure is reported beside it);
   - ``floor``: DuckDB landing file -> Parquet (GB18030 transcoded by iconv first, counted);
   - ``pandas``: household standardization written by hand in pandas;
   - ``spark``: the same in PySpark local[2] (skipped with a message if pyspark is missing);
   - ``airflow``: ``runner.run_pipeline`` (all DAGs through ``dag.test()``) on another fresh
     lake, to show the fixed overhead of Airflow over calling the stage functions.
   Each child meters wall time, CPU (user+sys incl. its children) and peak RSS of its process
   tree (benchmarks/meter.py) per stage.
3. Prints a table and the ratios and writes ``<out>/benchmark.json``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
DATE = "2026-11-20"
NEXT_DATE = "2026-11-21"
TRIVIAL_DATE = "2026-11-22"  # one changed row of the household feed: the fixed part of a day
QUIET_DATE = "2026-11-23"  # nothing delivered


# ================================================================================ children
def _child_govlake(lake_root: Path, out: Path, incremental: bool) -> dict:
    os.environ["GOVLAKE_LAKE_ROOT"] = str(lake_root)
    # publish does all it does in production, token renditions included: a join-token key for
    # this benchmark lake only (a fixed test value, not a secret of any deployment)
    os.environ.setdefault("GOVLAKE_TOKEN_KEY", hashlib.sha256(b"govlake benchmark token key").hexdigest())
    from meter import Meter

    from govlake import ingest, metadata, transform
    from govlake.storage import Lake

    lake = Lake(lake_root).ensure()
    stages: list[dict] = []

    def full_run(tag: str, date: str) -> list[dict]:
        rows: list[dict] = []
        run_id = transform.run_id_for(f"bench_{tag}_{date}")
        with Meter(f"{tag}: total") as whole:
            with Meter(f"{tag}: extract") as ex:
                for ds in metadata.datasets():
                    with Meter(f"{tag}: extract {ds.id}", group="extract_feed") as m:
                        r = ingest.extract_dataset(ds, lake).summary()
                    m.result["rows"] = r["rows"]
                    rows.append(m.result)
            ex.result["rows"] = sum(r.get("rows", 0) for r in rows)
            rows.append(ex.result)
            with Meter(f"{tag}: dbt standardized") as m:
                std = transform.build_standardized(lake, run_id)
            m.result["nodes"] = _dbt_nodes(lake)
            rows.append(m.result)
            with Meter(f"{tag}: gate standardized") as m:
                transform.gate_standardized(lake, run_id)
            rows.append(m.result)
            with Meter(f"{tag}: dbt shared") as m:
                transform.build_shared(lake, run_id)
            m.result["nodes"] = _dbt_nodes(lake)
            rows.append(m.result)
            with Meter(f"{tag}: gate shared") as m:
                transform.gate_shared(lake, run_id)
            rows.append(m.result)
            with Meter(f"{tag}: publish") as m:
                pub = transform.publish_layer(lake, run_id)
            m.result["published"] = pub
            rows.append(m.result)
        whole.result["counts"] = std.get("counts")
        rows.append(whole.result)
        return rows

    stages += full_run("full", DATE)
    if incremental:
        import changeset

        with Meter("next-day change set (not timed)") as m:
            info = changeset.write_next_day(lake, DATE, NEXT_DATE)
        m.result["changeset"] = info
        stages.append(m.result)
        stages += full_run("incremental", NEXT_DATE)
        with Meter("trivial change (not timed)") as m:
            info = changeset.write_trivial_day(lake, NEXT_DATE, TRIVIAL_DATE)
        m.result["changeset"] = info
        stages.append(m.result)
        stages += full_run("trivial", TRIVIAL_DATE)
        before = _current_product_sha(lake)
        stages += full_run("no change", QUIET_DATE)
        after = _current_product_sha(lake)
        # nothing new came in: no product gets a new version (publication_unchanged in the audit)
        stages[-1]["same_bytes_as_previous_day"] = all(after[p] == before[p] for p in before)
    return {"stages": stages}


def _current_product_sha(lake) -> dict:
    """product -> (version, SHA-256 of its files), from the current version's manifest."""
    from govlake import transform

    out = {}
    for p in transform.shared_products():
        m = lake.manifest(p)
        out[p] = (m["version"], [f["sha256"] for f in m["files"]])
    return out


def _dbt_nodes(lake) -> list[dict]:
    p = Path(lake.meta_root) / "dbt" / "target" / "run_results.json"
    if not p.exists():
        return []
    res = json.loads(p.read_text(encoding="utf-8"))
    return [{"node": r["unique_id"].split(".")[-1], "seconds": round(r.get("execution_time") or 0, 3)}
            for r in res.get("results", []) if r["unique_id"].startswith(("model.", "seed."))]


HOUSEHOLD = "public_security.household_registration"
HOUSEHOLD_STG = "stg_" + HOUSEHOLD.replace(".", "__")
HOUSEHOLD_CHK = "chk_" + HOUSEHOLD.replace(".", "__")
HOUSEHOLD_SELECT = f"+{HOUSEHOLD_STG}"  # the seed, chk_ and stg_ of the feed (and their tests)


def _child_household(lake_root: Path) -> dict:
    """What govlake does for the household feed alone: extract it, then one dbt build of what
    its standardized Parquet needs, called the way transform.build_standardized calls dbt."""
    os.environ["GOVLAKE_LAKE_ROOT"] = str(lake_root)
    import duckdb
    from meter import Meter

    from govlake import ingest, metadata, transform
    from govlake.dbt import run_dbt
    from govlake.storage import Lake

    lake = Lake(lake_root).ensure()
    ds = next(d for d in metadata.datasets() if d.id == HOUSEHOLD)
    run_id = transform.run_id_for(f"bench_household_{DATE}")
    build_dir = lake.candidate(run_id)
    stages: list[dict] = []
    with Meter("household: total") as whole:
        with Meter(f"household: extract {HOUSEHOLD}") as m:
            r = ingest.extract_dataset(ds, lake).summary()
        m.result["rows"] = r["rows"]
        stages.append(m.result)
        with Meter(f"household: dbt {HOUSEHOLD_SELECT}") as m:
            run = run_dbt(["build", "--indirect-selection", "cautious"], lake=lake, build_dir=build_dir,
                          select=HOUSEHOLD_SELECT)
        m.result["nodes"] = _dbt_nodes(lake)
        m.result["dbt_seconds"] = round(run.seconds, 3)
        stages.append(m.result)
    whole.result["rows"] = r["rows"]
    stages.append(whole.result)

    # not timed: what was produced, for the equal-work check against the full run (the
    # standardized rows are the stg_ view over chk_: no Parquet copy, the gate reads them in place)
    con = duckdb.connect(str(lake.duckdb_path), read_only=True)
    try:
        stg_n = con.execute(f"select count(*) from main.{HOUSEHOLD_STG}").fetchone()[0]
        stg_kind = con.execute("select table_type from information_schema.tables where table_name = ?",
                               [HOUSEHOLD_STG]).fetchone()[0]
        # quarantined rows are the chk_ rows with errors (the quarantine_rows model, a union over
        # all six feeds, is not part of this build); counted as transform.feed_counts counts them
        q_n = con.execute(f"select count(*) from main.{HOUSEHOLD_CHK} where len(_errors) > 0").fetchone()[0]
        reasons = dict(con.execute(
            f"select e.rule, count(distinct (_source_file, _row_number)) from "
            f"(select _source_file, _row_number, unnest(_errors) as e from main.{HOUSEHOLD_CHK}) "
            f"group by 1 order by 2 desc").fetchall())
    finally:
        con.close()
    check = {"run_id": run_id, "build_dir": str(build_dir), "stg_relation": stg_kind,
             "raw_rows": r["rows"], "standardized": stg_n, "quarantined": q_n, "reasons": reasons,
             "outputs": sorted(run.outputs())}
    return {"stages": stages, "check": check}


def _child_baseline(kind: str, landing: Path, out: Path) -> dict:
    import baselines
    from meter import Meter

    fn = {"floor": baselines.floor, "pandas": baselines.pandas_household, "spark": baselines.spark_household}[kind]
    with Meter(kind) as m:
        info = fn(landing, out)
    m.result.update(info)
    return {"stages": [m.result]}


def _child_airflow(lake_root: Path) -> dict:
    os.environ["GOVLAKE_LAKE_ROOT"] = str(lake_root)
    from meter import Meter

    from govlake import runner

    runner.ensure_airflow_db()
    with Meter("airflow: run_pipeline") as m:
        results = runner.run_pipeline(DATE, progress=False)
    m.result["dags"] = [{"dag_id": r["dag_id"], "state": r["state"]} for r in results]
    return {"stages": [m.result]}


def child_main(argv: list[str]) -> int:
    res, kind, a, b = Path(argv[0]), argv[1], Path(argv[2]), Path(argv[3])
    if kind == "govlake":
        out = _child_govlake(a, b, incremental=argv[4] == "1")
    elif kind == "household":
        out = _child_household(a)
    elif kind == "airflow":
        out = _child_airflow(a)
    else:
        out = _child_baseline(kind, a, b)
    res.write_text(json.dumps(out, ensure_ascii=False, indent=1, default=str), encoding="utf-8")
    return 0


# ================================================================================ parent
def _spawn(args: list[str], result: Path, log: Path) -> dict:
    env = os.environ.copy()
    env.setdefault("PYTHONUNBUFFERED", "1")
    t0 = time.perf_counter()
    with open(log, "w") as fh:
        proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--_child", str(result), *args],
                              stdout=fh, stderr=subprocess.STDOUT, env=env)
    if proc.returncode != 0:
        tail = log.read_text(errors="replace")[-4000:]
        raise RuntimeError(f"benchmark child {args[0]} failed (exit {proc.returncode}); log {log}:\n{tail}")
    out = json.loads(result.read_text(encoding="utf-8"))
    out["process_wall_s"] = round(time.perf_counter() - t0, 3)
    return out


def _link_landing(src_lake: Path, dst_lake: Path) -> None:
    src = src_lake / "landing"
    for f in src.rglob("*"):
        if f.is_file() and not f.name.startswith("."):
            d = dst_lake / "landing" / f.relative_to(src)
            d.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(f, d)
            except OSError:
                shutil.copy2(f, d)


def _spark_available() -> str | None:
    try:
        import pyspark  # noqa: F401
    except ImportError:
        return "pyspark is not installed (.venv/bin/pip install pyspark): Spark baseline skipped"
    if not shutil.which("java") and not os.environ.get("JAVA_HOME"):
        return "no java on PATH and no JAVA_HOME: Spark baseline skipped"
    return None


def _household_stage(full: list[dict]) -> dict:
    """The household stage as it was taken from the full run (before the ``household`` run
    existed): extract(household) + the dbt node times of chk_ and stg_ of the household feed.
    In the full run the chk_ node shares the 2 cores with chk_ social insurance (dbt threads: 2),
    so this is inflated against a baseline that has the machine alone; kept for comparison."""
    ex = next(s for s in full if s["stage"] == f"full: extract {HOUSEHOLD}")
    dbt = next(s for s in full if s["stage"] == "full: dbt standardized")
    nodes = {n["node"]: n["seconds"] for n in dbt.get("nodes", [])}
    std = sum(v for k, v in nodes.items() if k in (HOUSEHOLD_CHK, HOUSEHOLD_STG))
    return {"wall_s": round(ex["wall_s"] + std, 3), "extract_s": ex["wall_s"], "dbt_nodes_s": round(std, 3),
            "quarantine_rows_node_s": nodes.get("quarantine_rows"),
            "label": "in the full run (shares cores with social insurance)"}


def _household_alone(run: dict) -> dict | None:
    """The ``household`` run: the feed alone, extract + one dbt build, wall of the whole."""
    if "stages" not in run:
        return None
    by = {s["stage"]: s for s in run["stages"]}
    tot, ex = by["household: total"], by[f"household: extract {HOUSEHOLD}"]
    dbt = by[f"household: dbt {HOUSEHOLD_SELECT}"]
    nodes = sum(n["seconds"] for n in dbt.get("nodes", []) if n["node"] in (HOUSEHOLD_CHK, HOUSEHOLD_STG))
    return {"wall_s": tot["wall_s"], "cpu_s": tot["cpu_s"], "peak_rss_mb": tot["peak_rss_mb"],
            "extract_s": ex["wall_s"], "extract_cpu_s": ex["cpu_s"], "dbt_s": dbt["wall_s"], "dbt_cpu_s": dbt["cpu_s"],
            "dbt_nodes_s": round(nodes, 3),  # chk_ + stg_ node times, the part the in-full-run figure counts
            "label": "alone (own process, extract + dbt build of " + HOUSEHOLD_SELECT + ")"}


def _household_equal_work(runs: dict) -> str | None:
    """Same rows in and out as the full run's household feed? None when either run is missing."""
    check = runs.get("household", {}).get("check")
    if not check:
        return None
    problems = []
    if check.get("stg_relation", "VIEW") != "VIEW":  # (older outputs have no stg_relation)
        problems.append(f"the standardized rows are a {check.get('stg_relation')}, not the stg_ view over chk_")
    if check.get("standardized") is not None and check["raw_rows"] != check["standardized"] + check["quarantined"]:
        problems.append(f"raw {check['raw_rows']:,} != standardized {check['standardized']:,} + quarantined "
                        f"{check['quarantined']:,}")
    full = None
    if "stages" in runs.get("govlake", {}):
        total = next((s for s in runs["govlake"]["stages"] if s["stage"] == "full: total"), {})
        full = next((c for c in total.get("counts") or [] if c["dataset"] == HOUSEHOLD), None)
    if full is not None:
        for k in ("raw_rows", "standardized", "quarantined"):
            if check.get(k) != full[k]:
                problems.append(f"{k}: household run {check.get(k)} vs full run {full[k]}")
        if full.get("reasons") and check.get("reasons") != full["reasons"]:
            problems.append(f"quarantine reasons differ: household run {check.get('reasons')} "
                            f"vs full run {full['reasons']}")
    elif not check.get("quarantined"):  # the generated feeds always hold invalid rows
        problems.append("no quarantined rows in chk_ (and no full run to compare with)")
    where = "same as the household feed in the full run" if full is not None else "full run not available to compare"
    if problems:
        return "WARNING, not equal work: " + "; ".join(problems)
    return (f"ok: {check['raw_rows']:,} raw = {check['standardized']:,} standardized + {check['quarantined']:,} "
            f"quarantined, {where}; the standardized rows are the stg_ view over chk_")


def report(res: dict, console=None) -> list[str]:
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    t = Table(title=f"govlake benchmark, {res['people']:,} people, {res['rows']:,} landing rows "
                    f"(load avg at start {res['loadavg_start']}, end {res['loadavg_end']})")
    for c in ("run", "stage", "rows", "wall s", "cpu s", "peak RSS MiB", "rows/s"):
        t.add_column(c, justify="left" if c in ("run", "stage") else "right")
    for run, data in res["runs"].items():
        if "skipped" in data:
            t.add_row(run, data["skipped"], "", "", "", "", "")
            continue
        for s in data["stages"]:
            rows = s.get("rows")
            rps = f"{rows / s['wall_s']:,.0f}" if rows and s["wall_s"] else ""
            t.add_row(run, s["stage"], f"{rows:,}" if rows else "", f"{s['wall_s']:.2f}", f"{s['cpu_s']:.2f}",
                      f"{s['peak_rss_mb']:,.0f}", rps)
    console.print(t)
    lines = [f"{k}: {v}" for k, v in res["ratios"].items()]
    for line in lines:
        console.print(line, markup=False, style="bold red" if "WARNING" in line else None)
    return lines


def _ratio(kind: str, base_s: float, hh: dict, note: str, target: str) -> str:
    return (f"{base_s / hh['wall_s']:.2f}x  ({kind} {base_s:.1f} s / govlake {hh['wall_s']:.1f} s {note}; "
            f"target {target})")


def compute_ratios(res: dict) -> dict:
    runs = res["runs"]
    r: dict[str, str] = {}
    have_full = "stages" in runs.get("govlake", {})
    full = runs["govlake"]["stages"] if have_full else []
    by = {s["stage"]: s for s in full}
    total = by["full: total"]["wall_s"] if have_full else None
    if have_full and "stages" in runs.get("floor", {}):
        floor = runs["floor"]["stages"][0]["wall_s"]
        r["floor ratio (govlake end-to-end / floor)"] = f"{total / floor:.2f}x  ({total:.1f} s / {floor:.1f} s; target <= 8x, later <= 4x)"
        fc, tc = runs["floor"]["stages"][0]["cpu_s"], by["full: total"]["cpu_s"]
        r["floor ratio, CPU time (govlake / floor)"] = f"{tc / fc:.2f}x  ({tc:.1f} s / {fc:.1f} s)"

    # household standardization: the household run alone is the denominator; the figure taken from
    # the full run (chk_ household shares the cores with chk_ social insurance) is shown beside it
    alone = _household_alone(runs.get("household", {}))
    in_full = _household_stage(full) if have_full else None
    res["household_stage"] = {"alone": alone, "in_full_run": in_full,
                              "denominator": "alone" if alone else ("in_full_run" if in_full else None)}
    if alone:
        r["govlake household stage, alone (denominator)"] = (
            f"{alone['wall_s']:.1f} s wall, {alone['cpu_s']:.1f} s CPU, {alone['peak_rss_mb']:,.0f} MiB peak "
            f"(extract {alone['extract_s']:.1f} s + dbt build {HOUSEHOLD_SELECT} {alone['dbt_s']:.1f} s, of which "
            f"chk_/stg_ node times {alone['dbt_nodes_s']:.1f} s; the rest is dbt start-up, parse, seed, tests)")
    else:
        why = runs.get("household", {}).get("skipped", "not run")
        r["govlake household stage, alone (denominator)"] = \
            f"missing ({why}): ratios FALL BACK to the in-full-run figure"
    if in_full:
        r["govlake household stage, in the full run (shares cores with social insurance)"] = (
            f"{in_full['wall_s']:.1f} s (extract {in_full['extract_s']:.1f} s + chk_/stg_ node times "
            f"{in_full['dbt_nodes_s']:.1f} s)")
    eq = _household_equal_work(runs)
    if eq:
        r["household equal work (household run vs full run)"] = eq
    hh = alone or in_full
    note = "household feed alone" if alone else \
        "FALLBACK: household run missing, in-full-run figure, shares cores with social insurance"
    for kind, key, target in (("pandas", "pandas / govlake (household standardization)", ">= 3x (later >= 5x)"),
                              ("spark", "spark / govlake (household standardization)", ">= 2.5x (later >= 3x)")):
        if "stages" not in runs.get(kind, {}):
            if kind == "spark":
                r[key] = runs.get("spark", {}).get("skipped", "not run")
            continue
        base = runs[kind]["stages"][0]["wall_s"]
        valid = runs[kind]["stages"][0].get("valid")
        ours = (runs.get("household", {}).get("check") or {}).get("standardized")
        if valid is not None and ours is not None:
            r[f"{kind} equal work (valid household rows vs govlake standardized)"] = (
                f"ok: {valid:,} = {ours:,}" if valid == ours else
                f"WARNING, not equal work: {kind} accepts {valid:,} rows, govlake {ours:,}")
        if hh:
            r[key] = _ratio(kind, base, hh, note, target)
        if alone and in_full:
            r[f"{kind} / govlake in the full run (shares cores with social insurance)"] = \
                _ratio(kind, base, in_full, "in the full run", target)
    if have_full:
        gates = by["full: gate standardized"]["wall_s"] + by["full: gate shared"]["wall_s"]
        transform_s = by["full: dbt standardized"]["wall_s"] + by["full: dbt shared"]["wall_s"]
        r["gates / transform"] = f"{100 * gates / transform_s:.1f} %  ({gates:.1f} s / {transform_s:.1f} s; target <= 25 %)"
    peak = max((s["peak_rss_mb"] for d in runs.values() if "stages" in d for s in d["stages"]
                if not s["stage"].startswith(("pandas", "spark"))), default=None)
    if peak is not None:
        r["peak RSS govlake (MiB)"] = f"{peak:,.0f}  (target <= 4096)"
    if "incremental: total" in by:
        inc = by["incremental: total"]["wall_s"]
        r["incremental next-day / full build"] = f"{100 * inc / total:.1f} %  ({inc:.1f} s / {total:.1f} s; target <= 10 %, later <= 5 %)"
        ic, tc = by["incremental: total"]["cpu_s"], by["full: total"]["cpu_s"]
        r["incremental next-day / full build, CPU time"] = f"{100 * ic / tc:.1f} %  ({ic:.1f} s / {tc:.1f} s)"
    if "trivial: total" in by and "incremental: total" in by:
        fx, inc = by["trivial: total"], by["incremental: total"]
        r["next day, fixed part (a day on which one household row changes)"] = (
            f"{fx['wall_s']:.1f} s wall, {fx['cpu_s']:.1f} s CPU  (target <= 15 s)")
        r["next day, proportional part (next day - fixed part)"] = (
            f"{inc['wall_s'] - fx['wall_s']:.1f} s wall, {inc['cpu_s'] - fx['cpu_s']:.1f} s CPU")
    if "no change: total" in by:
        q = by["no change: total"]
        r["day with nothing delivered / full build"] = (
            f"{100 * q['wall_s'] / total:.1f} %  ({q['wall_s']:.1f} s wall, {q['cpu_s']:.1f} s CPU: the part of "
            f"a day's cost that does not depend on the change; every product unchanged, no new version: "
            f"{'yes' if q.get('same_bytes_as_previous_day') else 'NO'})")
    if have_full and "stages" in runs.get("airflow", {}):
        af = runs["airflow"]["stages"][0]["wall_s"]
        afc, tc = runs["airflow"]["stages"][0]["cpu_s"], by["full: total"]["cpu_s"]
        r["airflow overhead (run_pipeline - stage functions)"] = \
            f"wall {af - total:+.1f} s ({af:.1f} vs {total:.1f}), CPU {afc - tc:+.1f} s ({afc:.1f} vs {tc:.1f})"
    return r


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--_child":
        return child_main(argv[1:])
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--people", type=int, required=True)
    ap.add_argument("--out", type=Path, default=None, help="work and result folder (default: a temp folder)")
    ap.add_argument("--keep", action="store_true", help="keep the lakes and baseline outputs")
    ap.add_argument("--source", type=Path, default=None, help="reuse the landing zone of this lake")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--no-spark", action="store_true")
    ap.add_argument("--no-airflow", action="store_true")
    ap.add_argument("--no-incremental", action="store_true")
    ap.add_argument("--only", default=None,
                    help="comma-separated runs to (re)do (govlake,household,floor,pandas,spark,airflow); the others "
                         "are read from <out>/<run>.json of an earlier run with the same --out")
    args = ap.parse_args(argv)

    import tempfile

    out = (args.out or Path(tempfile.mkdtemp(prefix=f"govlake-bench-{args.people}-"))).resolve()
    out.mkdir(parents=True, exist_ok=True)
    src = args.source.resolve() if args.source else out / "source"
    if not args.source:
        os.environ["GOVLAKE_LAKE_ROOT"] = str(src)
        from govlake_synth import generate
        from govlake.storage import Lake

        print(f"generating {args.people:,} people into {src} (not timed) ...", flush=True)
        shutil.rmtree(src, ignore_errors=True)
        generate.generate(Lake(src).ensure(), people=args.people, date=DATE, seed=args.seed, progress=True)
    landing = src / "landing"
    n_rows = _count_rows(landing)
    res: dict = {"people": args.people, "rows": n_rows, "date": DATE, "host": platform.node(),
                 "cpus": os.cpu_count(), "loadavg_start": _load(), "runs": {}}
    logs = out / "logs"
    logs.mkdir(exist_ok=True)

    only = set(args.only.split(",")) if args.only else None

    def run(name: str, *child_args: str):
        if only is not None and name not in only:
            prev = out / f"{name}.json"
            res["runs"][name] = json.loads(prev.read_text(encoding="utf-8")) if prev.exists() else \
                {"skipped": f"not run (--only {args.only})"}
            return
        print(f"running {name} ...", flush=True)
        try:
            res["runs"][name] = _spawn(list(child_args), out / f"{name}.json", logs / f"{name}.log")
        except RuntimeError as exc:
            if name == "govlake":
                raise
            print(exc, flush=True)
            res["runs"][name] = {"skipped": f"failed: {str(exc).splitlines()[0]}"}

    lake = out / "lake"
    if only is None or "govlake" in only:
        shutil.rmtree(lake, ignore_errors=True)
        _link_landing(src, lake)
    run("govlake", "govlake", str(lake), str(out), "0" if args.no_incremental else "1")
    hl = out / "lake_household"
    if only is None or "household" in only:
        shutil.rmtree(hl, ignore_errors=True)
        _link_landing(src, hl)
    run("household", "household", str(hl), str(out))
    fl = out / "floor_out"
    run("floor", "floor", str(landing), str(fl))
    run("pandas", "pandas", str(landing), str(out / "pandas_out"))
    why = "skipped (--no-spark)" if args.no_spark else _spark_available()
    if why:
        print(why, flush=True)
        res["runs"]["spark"] = {"skipped": why}
    else:
        run("spark", "spark", str(landing), str(out / "spark_out"))
    if args.no_airflow:
        res["runs"]["airflow"] = {"skipped": "skipped (--no-airflow)"}
    else:
        al = out / "lake_airflow"
        if only is None or "airflow" in only:
            shutil.rmtree(al, ignore_errors=True)
            _link_landing(src, al)
        run("airflow", "airflow", str(al), str(out), str(out / "airflow_unused"))
    res["loadavg_end"] = _load()
    res["ratios"] = compute_ratios(res)
    (out / "benchmark.json").write_text(json.dumps(res, ensure_ascii=False, indent=1, default=str), encoding="utf-8")
    report(res)
    print(f"results: {out / 'benchmark.json'}")
    if not args.keep:
        for d in ("lake", "lake_household", "lake_airflow", "floor_out", "pandas_out", "spark_out", "source"):
            if d == "source" and args.source:
                continue
            shutil.rmtree(out / d, ignore_errors=True)
    return 0


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def _count_rows(landing: Path) -> int:
    n = 0
    for f in landing.rglob("*"):
        if f.is_file() and f.suffix in (".csv", ".jsonl"):
            with open(f, "rb") as fh:
                lines = sum(buf.count(b"\n") for buf in iter(lambda: fh.read(1 << 24), b""))
            n += lines - (1 if f.suffix == ".csv" else 0)
    return n


if __name__ == "__main__":
    sys.exit(main())
