"""govlake benchmark: every pipeline stage and three baselines on the same generated input.

    .venv/bin/python benchmarks/run.py --people 1000000 [--out DIR] [--keep] [--source LAKE]
                                       [--no-spark] [--no-airflow] [--no-incremental]

1. Generates one delivery of the six feeds for ``--people`` people (not timed), or reuses the
   landing zone of ``--source`` (a lake a previous ``govlake generate`` wrote), hard-linked.
2. Runs, each in its own child process so that one's memory does not hide in another's:
   - ``govlake``: the stage functions the Airflow tasks call, in order, on a fresh lake:
     extract (per feed), dbt standardized, gate standardized, dbt shared, gate shared, publish;
     then (``--no-incremental`` skips it) a next-day delivery of 1 % new/changed rows
     (benchmarks/changeset.py) through the same stages: the incremental cost;
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


# ================================================================================ children
def _child_govlake(lake_root: Path, out: Path, incremental: bool) -> dict:
    os.environ["GOVLAKE_LAKE_ROOT"] = str(lake_root)
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
    return {"stages": stages}


def _dbt_nodes(lake) -> list[dict]:
    p = Path(lake.meta_root) / "dbt" / "target" / "run_results.json"
    if not p.exists():
        return []
    res = json.loads(p.read_text(encoding="utf-8"))
    return [{"node": r["unique_id"].split(".")[-1], "seconds": round(r.get("execution_time") or 0, 3)}
            for r in res.get("results", []) if r["unique_id"].startswith(("model.", "seed."))]


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


def _household_stage(full: dict) -> dict:
    """The govlake stage comparable with the pandas/Spark scripts: landing CSV -> standardized
    household Parquet = extract(household) + dbt nodes chk_ and stg_ of the household feed."""
    ex = next(s for s in full if s["stage"] == "full: extract public_security.household_registration")
    dbt = next(s for s in full if s["stage"] == "full: dbt standardized")
    nodes = {n["node"]: n["seconds"] for n in dbt.get("nodes", [])}
    std = sum(v for k, v in nodes.items() if k.endswith("public_security__household_registration"))
    return {"wall_s": round(ex["wall_s"] + std, 3), "extract_s": ex["wall_s"], "dbt_nodes_s": round(std, 3)}


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
        console.print(line)
    return lines


def compute_ratios(res: dict) -> dict:
    runs = res["runs"]
    full = runs["govlake"]["stages"]
    by = {s["stage"]: s for s in full}
    total = by["full: total"]["wall_s"]
    r: dict[str, str] = {}
    if "stages" in runs.get("floor", {}):
        floor = runs["floor"]["stages"][0]["wall_s"]
        r["floor ratio (govlake end-to-end / floor)"] = f"{total / floor:.2f}x  ({total:.1f} s / {floor:.1f} s; target <= 4x)"
        fc, tc = runs["floor"]["stages"][0]["cpu_s"], by["full: total"]["cpu_s"]
        r["floor ratio, CPU time (govlake / floor)"] = f"{tc / fc:.2f}x  ({tc:.1f} s / {fc:.1f} s)"
    hh = _household_stage(full)
    res["household_stage"] = hh
    if "stages" in runs.get("pandas", {}):
        pd_s = runs["pandas"]["stages"][0]["wall_s"]
        r["pandas / govlake (household standardization)"] = f"{pd_s / hh['wall_s']:.2f}x  ({pd_s:.1f} s / {hh['wall_s']:.1f} s; target >= 5x)"
    if "stages" in runs.get("spark", {}):
        sp = runs["spark"]["stages"][0]["wall_s"]
        r["spark / govlake (household standardization)"] = f"{sp / hh['wall_s']:.2f}x  ({sp:.1f} s / {hh['wall_s']:.1f} s; target >= 3x)"
    else:
        r["spark / govlake (household standardization)"] = runs.get("spark", {}).get("skipped", "not run")
    gates = by["full: gate standardized"]["wall_s"] + by["full: gate shared"]["wall_s"]
    transform_s = by["full: dbt standardized"]["wall_s"] + by["full: dbt shared"]["wall_s"]
    r["gates / transform"] = f"{100 * gates / transform_s:.1f} %  ({gates:.1f} s / {transform_s:.1f} s; target <= 25 %)"
    peak = max(s["peak_rss_mb"] for d in runs.values() if "stages" in d for s in d["stages"]
               if not s["stage"].startswith(("pandas", "spark")))
    r["peak RSS govlake (MiB)"] = f"{peak:,.0f}  (target <= 4096)"
    if "incremental: total" in by:
        inc = by["incremental: total"]["wall_s"]
        r["incremental next-day / full build"] = f"{100 * inc / total:.1f} %  ({inc:.1f} s / {total:.1f} s; target <= 5 %)"
        ic, tc = by["incremental: total"]["cpu_s"], by["full: total"]["cpu_s"]
        r["incremental next-day / full build, CPU time"] = f"{100 * ic / tc:.1f} %  ({ic:.1f} s / {tc:.1f} s)"
    if "stages" in runs.get("airflow", {}):
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
                    help="comma-separated runs to (re)do (govlake,floor,pandas,spark,airflow); the others "
                         "are read from <out>/<run>.json of an earlier run with the same --out")
    args = ap.parse_args(argv)

    import tempfile

    out = (args.out or Path(tempfile.mkdtemp(prefix=f"govlake-bench-{args.people}-"))).resolve()
    out.mkdir(parents=True, exist_ok=True)
    src = args.source.resolve() if args.source else out / "source"
    if not args.source:
        os.environ["GOVLAKE_LAKE_ROOT"] = str(src)
        from govlake import generate
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
        for d in ("lake", "lake_airflow", "floor_out", "pandas_out", "spark_out", "source"):
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
