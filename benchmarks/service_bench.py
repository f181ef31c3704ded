"""The sharing service under load: lookups, verifications, L1 aggregates, 8 concurrent analysts.

    .venv/bin/python benchmarks/service_bench.py --lake /tmp/sb/lake1m --out /tmp/sb/service-1m.json
                     [--duration 15] [--connections 16] [--fastpath [--cache-reads]] [--tool wrk|python]
    .venv/bin/python benchmarks/service_bench.py --lake L --out F --micro 2000 [--encrypted]   # Index vs DuckDB
    .venv/bin/python benchmarks/service_bench.py --lake L --out F --components                 # a lookup's steps
    .venv/bin/python benchmarks/service_bench.py --lake /tmp/sb/lake10m --make-synthetic-lake 10000000

The lake must hold published products (``govlake generate --people N`` + ``govlake run``). The
bench, all on loopback, bounded in time and count:

1. registers its own clients in the lake's registry (``govlake clients add … --json``): a 公安
   app (role ga_population_analyst, clear IDs) for lookups, a 民政 app (mz_marriage_analyst)
   for verifications — the 统计 role (tj_public_statistics) is aggregate-only and is refused
   verifications (403) — and 8 统计 analysts (tj_public_statistics, L1) for the aggregates. A
   throwaway join-token key is used when none is configured, so per-person access records are
   written as in production. ``--workers`` > 1 does not work today: ``govlake serve`` passes an
   app object to uvicorn, which needs an import string for workers and exits;
2. starts ``govlake serve`` as a child with a bench settings file (``--config``) whose rate
   limits are lifted (the bench measures capacity, not the limiter; every other limit is the
   reviewed ``config/service.yml``'s); with ``--fastpath`` the child is this file's
   ``--serve-fastpath`` mode: the same app, with the service's DuckDB cursor for its own fixed
   lookup/verification SQL answered by ``govlake.sharing.service.fastpath`` (app.py unchanged;
   the JSON's ``fastpath_engaged`` says whether the index really answered);
3. runs a closed-loop load generator for ``--duration`` seconds per phase with
   ``--connections`` connections: ``wrk`` (C, one thread) when installed, else asyncio + httpx.
   Either way the generator runs on the same 2 cores as the server and takes CPU from it;
4. phases: single lookups (clear ID, random existing keys), single verifications (民政 app, ID + claimed
   name, half true half false), L1 ``count(*)`` and a group-by over population_base
   (division_code, gender_code) — each timed end to end, sequentially, 5 times — then 8 analysts
   running that group-by in a loop for ``--duration`` s while the server's RSS (process tree) is
   sampled every 50 ms with psutil;
5. writes requests/s, p50/p95/p99 latency, errors (non-2xx, by status) and peak RSS per phase,
   the CPU seconds of the server, of the bench and of other processes (the machine is shared),
   and the targets and whether each is met, to ``--out`` (JSON), and prints them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
GOVLAKE = str(Path(sys.executable).with_name("govlake"))
PURPOSE_GA = "人口信息核查"
PURPOSE_TJ = "人口统计分析"
PURPOSE_MZ = "婚姻登记核验"
TARGETS = {"lookup_rps": 1000, "lookup_p99_ms": 50, "verify_rps": 1000, "verify_p99_ms": 50,
           "count_s": 1.0, "groupby_s": 3.0, "peak_rss_gib": 2.0}
GROUP_BY = ("SELECT division_code, gender_code, count(*) AS n FROM population_base "
            "GROUP BY division_code, gender_code ORDER BY division_code, gender_code")
COUNT = "SELECT count(*) AS n FROM population_base"


# ============================================================ the fast-path server (child mode)
def cache_per_request_reads() -> None:
    """Experiment (``--cache-reads``): what the interfaces reach when the per-request re-reads
    are cached by file stamp — ``grants.load`` (YAML parse of the grants file), the approved
    grants (SQLite) and ``Service.meta``'s stat of every model file (at most once a second).
    Same answers while the files do not change; not a change to the service."""
    from govlake import access_requests, grants
    from govlake.sharing.service import app as A

    def stamp(p: Path):
        try:
            st = p.stat()
            return (st.st_mtime_ns, st.st_size, st.st_ino)
        except FileNotFoundError:
            return None

    orig_load, orig_approved, orig_meta = grants.load, access_requests.approved_grants, A.Service.meta
    cache: dict = {}
    lock = threading.Lock()

    def load(path=None):
        p = Path(path) if path else grants.grants_file()
        k = ("grants", str(p))
        st = stamp(p)
        with lock:
            hit = cache.get(k)
        if hit and hit[0] == st:
            return hit[1]
        v = orig_load(path)
        with lock:
            cache[k] = (st, v)
        return v

    def approved(lake):
        db = Path(lake.access_db)
        st = (stamp(db), stamp(db.with_name(db.name + "-wal")))
        k = ("approved", str(db))
        with lock:
            hit = cache.get(k)
        if hit and hit[0] == st:
            return hit[1]
        v = orig_approved(lake)
        with lock:
            cache[k] = (st, v)
        return v

    def meta(self):
        now = time.monotonic()
        hit = getattr(self, "_bench_meta", None)
        if hit and now - hit[0] < 1.0:
            return hit[1]
        v = orig_meta(self)
        self._bench_meta = (now, v)
        return v

    grants.load, access_requests.approved_grants, A.Service.meta = load, approved, meta


def serve_fastpath(config: str, port: int) -> int:
    """``govlake serve`` with the service's fixed lookup/verification SQL answered by the index.

    Only the per-thread DuckDB cursor of ``Service`` is wrapped: the two statements app.py runs
    on it (lookup: ``SELECT cols FROM read_parquet(?) WHERE key = ?``; verification:
    ``SELECT key, fields FROM read_parquet(?) WHERE key IN (SELECT unnest(?::VARCHAR[]))``) are
    answered from ``fastpath.Index``; anything else goes to DuckDB as before."""
    from govlake.sharing.service import app as A
    from govlake.sharing.service import fastpath, server, settings as S
    from govlake.storage import Lake

    # FROM read_parquet('<path>') | (SELECT * FROM read_parquet('<path>', encryption_config = …) OFFSET 0)
    # (app.py builds it with sharing.crypto.read_parquet_sql); older app.py: read_parquet(?) + path param
    src = (r"(?:read_parquet\('(?P<p1>(?:[^']|'')+)'\)|\(SELECT \* FROM read_parquet\('(?P<p2>(?:[^']|'')+)'"
           r", encryption_config = \{[^}]*\}\) OFFSET 0\)|read_parquet\(\?\))")
    lookup_re = re.compile(r'^SELECT (?P<cols>.+) FROM ' + src + r' WHERE "?(?P<key>[A-Za-z0-9_]+)"? = \?$')
    verify_re = re.compile(r'^SELECT (?P<cols>.+) FROM ' + src + r' WHERE "?(?P<key>[A-Za-z0-9_]+)"? '
                           r'IN \(SELECT unnest\(\?::VARCHAR\[\]\)\)$')

    def cols_of(s: str) -> list[str]:
        return [c.strip().strip('"') for c in s.split(",")]

    def index_for(lake: Lake, path: str, key: str):
        rel = Path(path).resolve().relative_to(lake.published_root.resolve())
        product, vdir = rel.parts[0], rel.parts[1]
        version = int(re.sub(r"\D", "", vdir) or 0)
        return fastpath.Index.for_version(lake, product, version, key, path)

    def split(m, params):
        """(file path, the one remaining parameter)"""
        path = m.group("p1") or m.group("p2")
        if path:
            return path.replace("''", "'"), (params[0] if params and len(params) == 1 else None)
        return (params[0], params[1]) if params and len(params) == 2 else (None, None)

    class Result:
        def __init__(self, names, rows):
            self.description = [(n,) for n in names]
            self._rows = rows

        def fetchall(self):
            return self._rows

    class Cursor:
        def __init__(self, con, lake):
            self.con, self.lake = con, lake
            self.served = self.verified = 0

        def execute(self, sql, params=None):
            m = lookup_re.match(sql)
            if m:
                path, value = split(m, params)
                if path is not None:
                    cols, key = cols_of(m.group("cols")), m.group("key")
                    idx = index_for(self.lake, path, key)
                    self.served += 1
                    if self.served == 1:
                        print(f"fastpath: lookup served by {idx!r}", file=sys.stderr, flush=True)
                    return Result(cols, [tuple(r[c] for c in cols) for r in idx.lookup(value, cols)])
            m = verify_re.match(sql)
            if m:
                path, keys = split(m, params)
                if path is not None:
                    cols, key = cols_of(m.group("cols")), m.group("key")
                    idx = index_for(self.lake, path, key)
                    found = idx.rows_for(keys, cols[1:])
                    self.verified += 1
                    if self.verified == 1:
                        print(f"fastpath: verification served by {idx!r}", file=sys.stderr, flush=True)
                    return Result(cols, [(k, *r) for k, rs in found.items() for r in rs])
            return self.con.execute(sql, params)

        def __getattr__(self, name):  # anything else (PRAGMA add_parquet_key via execute, sql, …)
            return getattr(self.con, name)

    orig = A.Service.cursor

    def cursor(self):
        c = getattr(self._local, "fast", None)
        if c is None:
            c = Cursor(orig(self), self.lake)
            self._local.fast = c
        return c

    A.Service.cursor = cursor
    if os.environ.get("GOVLAKE_BENCH_CACHE_READS"):
        cache_per_request_reads()
        print("bench: per-request reads cached", file=sys.stderr, flush=True)
    settings = S.load(Path(config), port=port)
    return server.serve(settings)


# ============================================================ setup
def add_client(env: dict, cid: str, kind: str, role: str, dept: str, name: str) -> str:
    out = subprocess.run([GOVLAKE, "clients", "add", cid, "--kind", kind, "--role", role, "--department", dept,
                          "--name", name, "--json"], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout)["client_secret"]


def bench_config(path: Path) -> Path:
    import yaml

    doc = yaml.safe_load((ROOT / "config" / "service.yml").read_text(encoding="utf-8"))
    doc["rate_limits"] = {"default": {"per_second": 1_000_000, "burst": 1_000_000}}
    path.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    return path


def sample_people(lake_root: Path, n: int, seed: int = 5) -> list[dict]:
    import pyarrow.parquet as pq

    from govlake import query
    from govlake.storage import Lake

    lake = Lake(lake_root)
    v = lake.current_version("population_base")
    if v is None:
        raise SystemExit(f"{lake_root}: no published population_base (run govlake generate + govlake run)")
    path = query.product_file(lake, "population_base", v)
    pf = pq.ParquetFile(path)
    rng = random.Random(seed)
    out = []
    rgs = rng.sample(range(pf.num_row_groups), min(pf.num_row_groups, 16))
    per = max(1, n // len(rgs))
    for rg in rgs:
        t = pf.read_row_group(rg, columns=["id_number", "name"]).to_pylist()
        out += [r for r in rng.sample(t, min(per, len(t))) if r["id_number"] and r["name"]]
    rng.shuffle(out)
    return out[:n]


def token(url: str, cid: str, secret: str) -> str:
    import httpx

    r = httpx.post(url + "/v1/oauth/token", data={"grant_type": "client_credentials", "client_id": cid,
                                                   "client_secret": secret}, timeout=30)
    r.raise_for_status()
    return r.json()["access_token"]


# ============================================================ load generators
_WRK_LUA = r"""
local bodies = {}
local path = "%(path)s"
local auth = "Bearer %(token)s"
for line in io.lines("%(bodies)s") do bodies[#bodies + 1] = line end
local i = 0
request = function()
  i = i %% #bodies + 1
  return wrk.format("POST", path, {["Content-Type"] = "application/json", ["Authorization"] = auth}, bodies[i])
end
local statuses = {}
response = function(status, headers, body)
  if status ~= 200 then statuses[status] = (statuses[status] or 0) + 1 end
end
done = function(summary, latency, requests)
  local f = io.open("%(result)s", "w")
  f:write(string.format('{"requests": %%d, "duration_us": %%d, "connect_err": %%d, "read_err": %%d, '
    .. '"write_err": %%d, "timeout_err": %%d, "status_err": %%d, "p50_us": %%d, "p95_us": %%d, '
    .. '"p99_us": %%d, "max_us": %%d, "mean_us": %%f}',
    summary.requests, summary.duration, summary.errors.connect, summary.errors.read, summary.errors.write,
    summary.errors.timeout, summary.errors.status, latency:percentile(50), latency:percentile(95),
    latency:percentile(99), latency.max, latency.mean))
  f:close()
end
"""


def run_wrk(url: str, path: str, tok: str, bodies: list[dict], duration: float, connections: int,
            work: Path, tag: str) -> dict:
    bf = work / f"{tag}.bodies"
    bf.write_text("\n".join(json.dumps(b, ensure_ascii=False) for b in bodies) + "\n", encoding="utf-8")
    res = work / f"{tag}.result.json"
    script = work / f"{tag}.lua"
    script.write_text(_WRK_LUA % {"path": path, "token": tok, "bodies": bf, "result": res}, encoding="utf-8")
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{int(duration)}s", "--timeout", "10s", "-s", str(script), url]
    subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=duration + 60)
    r = json.loads(res.read_text())
    secs = r["duration_us"] / 1e6
    errors = r["status_err"] + r["connect_err"] + r["read_err"] + r["write_err"] + r["timeout_err"]
    return {"tool": "wrk -t1", "connections": connections, "seconds": round(secs, 2), "requests": r["requests"],
            "requests_per_s": round(r["requests"] / secs, 1), "errors": errors,
            "p50_ms": r["p50_us"] / 1000, "p95_ms": r["p95_us"] / 1000, "p99_ms": r["p99_us"] / 1000,
            "max_ms": r["max_us"] / 1000}


def run_python(url: str, path: str, tok: str, bodies: list[dict], duration: float, connections: int,
               max_requests: int = 2_000_000) -> dict:
    import httpx

    lat: list[float] = []
    errors: dict[str, int] = {}

    async def worker(client, start: int, deadline: float):
        i = start
        while time.perf_counter() < deadline and len(lat) < max_requests:
            t = time.perf_counter()
            try:
                r = await client.post(path, json=bodies[i % len(bodies)])
                if r.status_code != 200:
                    errors[str(r.status_code)] = errors.get(str(r.status_code), 0) + 1
            except httpx.HTTPError as exc:
                errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
            lat.append(time.perf_counter() - t)
            i += connections

    async def main():
        limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
        async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {tok}"}, limits=limits,
                                     timeout=10) as client:
            t0 = time.perf_counter()
            deadline = t0 + duration
            await asyncio.gather(*(worker(client, k, deadline) for k in range(connections)))
            return time.perf_counter() - t0

    secs = asyncio.run(main())
    return {"tool": "python asyncio+httpx", "connections": connections, "seconds": round(secs, 2),
            "requests": len(lat), "requests_per_s": round(len(lat) / secs, 1),
            "errors": sum(errors.values()), "errors_by_kind": errors, **_pcts(lat)}


def _get_phase(url: str, tok: str, a, tool: str, work: Path) -> dict:
    if tool != "wrk":
        return {"skipped": "needs wrk"}
    script = work / "whoami.lua"
    res = work / "whoami.result.json"
    lua = _WRK_LUA.replace('return wrk.format("POST", path', 'return wrk.format("GET", path').replace(
        "bodies[i])", "nil)")
    (work / "whoami.bodies").write_text("x\n", encoding="utf-8")
    script.write_text(lua % {"path": "/v1/whoami", "token": tok, "bodies": work / "whoami.bodies", "result": res},
                      encoding="utf-8")
    subprocess.run(["wrk", "-t1", f"-c{a.connections}", f"-d{int(a.duration)}s", "-s", str(script), url],
                   check=True, capture_output=True, timeout=a.duration + 60)
    r = json.loads(res.read_text())
    secs = r["duration_us"] / 1e6
    return {"tool": "wrk -t1", "requests_per_s": round(r["requests"] / secs, 1), "requests": r["requests"],
            "errors": r["status_err"], "p50_ms": r["p50_us"] / 1000, "p99_ms": r["p99_us"] / 1000}


def _pcts(lat: list[float]) -> dict:
    if not lat:
        return {}
    s = sorted(lat)

    def p(q):
        return round(s[min(len(s) - 1, int(q * len(s)))] * 1000, 2)

    return {"p50_ms": p(0.50), "p95_ms": p(0.95), "p99_ms": p(0.99), "max_ms": round(s[-1] * 1000, 2)}


class RssSampler:
    """Peak RSS of a process tree (the server), sampled every ``interval`` s."""

    def __init__(self, pid: int, interval: float = 0.05):
        import psutil

        sys.path.insert(0, str(HERE))
        from meter import tree_rss

        self.proc, self.tree_rss, self.interval = psutil.Process(pid), tree_rss, interval
        self.peak = self.tree_rss(self.proc)
        self._stop = threading.Event()

    def _run(self):
        while not self._stop.is_set():
            try:
                self.peak = max(self.peak, self.tree_rss(self.proc))
            except Exception:
                pass
            self._stop.wait(self.interval)

    def __enter__(self):
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()

    def now(self) -> int:
        return self.tree_rss(self.proc)


def _cpu_split(server_pid: int) -> dict:
    """CPU seconds so far of the server, of this bench (incl. its children but the server),
    and of the machine; the rest of the machine is what other work took while the bench ran."""
    import psutil

    def tree(p):
        t = 0.0
        for q in [p] + p.children(recursive=True):
            try:
                c = q.cpu_times()
                t += c.user + c.system
            except psutil.Error:
                pass
        return t

    srv = tree(psutil.Process(server_pid))
    me = psutil.Process()
    mine = tree(me) - srv
    import resource

    ru = resource.getrusage(resource.RUSAGE_CHILDREN)  # reaped children (wrk runs)
    m = psutil.cpu_times()
    return {"server": srv, "bench_and_load_generator": mine + ru.ru_utime + ru.ru_stime,
            "machine": m.user + m.system + getattr(m, "nice", 0.0)}


def sql_once(url: str, tok: str, sql: str, timeout: float = 60) -> tuple[float, int, dict]:
    import httpx

    t = time.perf_counter()
    r = httpx.post(url + "/v1/query", headers={"Authorization": f"Bearer {tok}"},
                   json={"sql": sql, "purpose": PURPOSE_TJ, "limit": None}, timeout=timeout)
    return time.perf_counter() - t, r.status_code, (r.json() if r.status_code == 200 else {"error": r.text[:300]})


def analysts(url: str, toks: list[str], duration: float, max_each: int = 10_000) -> dict:
    lat: list[float] = []
    statuses: dict[str, int] = {}
    lock = threading.Lock()
    deadline = time.perf_counter() + duration

    def one(tok):
        n = 0
        while time.perf_counter() < deadline and n < max_each:
            dtm, st, _ = sql_once(url, tok, GROUP_BY)
            with lock:
                if st == 200:
                    lat.append(dtm)
                else:
                    statuses[str(st)] = statuses.get(str(st), 0) + 1
            if st == 429:
                time.sleep(0.2)
            n += 1

    t0 = time.perf_counter()
    ths = [threading.Thread(target=one, args=(t,)) for t in toks]
    for t in ths:
        t.start()
    for t in ths:
        t.join()
    secs = time.perf_counter() - t0
    return {"analysts": len(toks), "seconds": round(secs, 2), "queries_ok": len(lat),
            "queries_per_s": round(len(lat) / secs, 2), "errors_by_status": statuses, **_pcts(lat)}


# ============================================================ in-process: index vs DuckDB per call
def micro(lake_root: Path, n: int, out: dict, encrypt: bool = False) -> dict:
    """Per-call latency of ``Index.lookup`` / ``Index.rows_for`` vs the DuckDB statements the
    service runs today (same thread, same file, same columns), index build time and memory."""
    import duckdb
    import psutil

    from govlake import query
    from govlake.sharing.service import fastpath
    from govlake.storage import Lake

    lake = Lake(lake_root)
    v = lake.current_version("population_base")
    path = str(query.product_file(lake, "population_base", v))
    people = sample_people(lake_root, n)
    from govlake.sharing import crypto

    if encrypt and not crypto.is_encrypted(path):  # as publish writes it now (ADR 0014)
        if not os.environ.get(crypto.KEYRING_ENV):
            os.environ[crypto.KEYRING_ENV] = str(Path(tempfile.mkdtemp(prefix="bench-ring-")) / "ring.json")
        crypto.ensure_keyring()
        enc_dir = Path(tempfile.mkdtemp(prefix="bench-enc-"))
        crypto.encrypt_copy(path, enc_dir / Path(path).name)
        path = str(enc_dir / Path(path).name)
    cols = [c for c in query.column_names(Path(path))]
    proc = psutil.Process()
    rss0 = proc.memory_info().rss
    t = time.perf_counter()
    if encrypt:
        idx = fastpath.Index(path, "id_number", copy_dir=Path(path).parent / "lookup", product="population_base",
                             version=v)
    else:
        idx = fastpath.Index.for_version(lake, "population_base", v, "id_number", path)
    build = time.perf_counter() - t
    rss1 = proc.memory_info().rss
    con = duckdb.connect(":memory:", config={"threads": 1, "memory_limit": "256MB"})
    src = crypto.read_parquet_sql(path, con)  # what app.py runs since ADR 0014
    cols_sql = ", ".join(f'"{c}"' for c in cols)
    sql = f'SELECT {cols_sql} FROM {src} WHERE "id_number" = ?'
    vsql = f'SELECT "id_number", "name" FROM {src} WHERE "id_number" IN (SELECT unnest(?::VARCHAR[]))'

    def timed(fn, items):
        lat = []
        for it in items:
            t = time.perf_counter()
            fn(it)
            lat.append(time.perf_counter() - t)
        return {"calls": len(lat), "mean_ms": round(statistics.mean(lat) * 1000, 3), **_pcts(lat)}

    sample = people[: min(n, 300)]
    res = {"encrypted_source": crypto.is_encrypted(path), "rows": idx.num_rows, "row_groups": idx.pf.metadata.num_row_groups, "build_s": round(build, 3),
           "index_kib": round(idx.nbytes / 2**10, 1), "rss_growth_build_mb": round((rss1 - rss0) / 2**20, 1),
           "duckdb_lookup": timed(lambda p: con.execute(sql, [p["id_number"]]).fetchall(), sample),
           "index_lookup_cold_cache": None, "index_lookup": None}
    fastpath.CACHE.max_bytes = 0  # every row group decoded: the worst case
    res["index_lookup_no_cache"] = timed(lambda p: idx.lookup(p["id_number"], cols), sample)
    fastpath.CACHE.max_bytes = fastpath._cache_budget()
    res["index_lookup_cold_cache"] = timed(lambda p: idx.lookup(p["id_number"], cols), sample)
    res["index_lookup"] = timed(lambda p: idx.lookup(p["id_number"], cols), sample)  # warm LRU
    res["cache_mb"] = round(fastpath.CACHE.nbytes / 2**20, 1)
    res["duckdb_verify_1"] = timed(lambda p: con.execute(vsql, [[p["id_number"]]]).fetchall(), sample[:100])
    res["index_verify_1"] = timed(lambda p: idx.rows_for([p["id_number"]], ["name"]), sample[:100])
    batch = [p["id_number"] for p in people[:1000]]
    res["duckdb_verify_1000"] = timed(lambda b: con.execute(vsql, [b]).fetchall(), [batch] * 3)
    res["index_verify_1000"] = timed(lambda b: idx.rows_for(b, ["name"]), [batch] * 3)
    # same answers
    for p in sample[:50]:
        d = con.execute(sql, [p["id_number"]]).fetchall()
        assert [tuple(r[c] for c in cols) for r in idx.lookup(p["id_number"], cols)] == d, p["id_number"]
    res["answers_equal_checked"] = 50
    res["rss_end_mb"] = round(proc.memory_info().rss / 2**20, 1)
    out["micro"] = res
    return res


# ============================================================ in-process: what one lookup costs, step by step
def components(lake_root: Path, n: int = 200) -> dict:
    """Mean ms per call of each step the lookup handler takes today (same functions, same lake),
    in this process, one thread: where a request's time goes besides HTTP."""
    from govlake import access_requests, audit, grants, masking, products, query
    from govlake.sharing.accesses import AccessLog
    from govlake.sharing.service import fastpath
    from govlake.storage import Lake

    lake = Lake(lake_root)
    v = lake.current_version("population_base")
    path = query.product_file(lake, "population_base", v)
    people = sample_people(lake_root, n)
    meta = products.load()
    log = AccessLog(lake)
    key = masking.load_key()
    import duckdb

    con = duckdb.connect(":memory:", config={"threads": 1, "memory_limit": "256MB"})
    cols = query.column_names(path)
    sql = fastpath.equivalent_sql(cols, "id_number")
    idx = fastpath.Index.for_version(lake, "population_base", v, "id_number", path)
    actor = {"client_id": "bench", "kind": "app", "department": "公安", "name": "压测", "role": "ga_population_analyst"}

    def t(fn, k=n):
        t0 = time.perf_counter()
        for i in range(k):
            fn(i)
        return round((time.perf_counter() - t0) / k * 1000, 3)

    def audited(i):
        it = audit.begin(lake, "lookup", {"actor": actor, "purpose": PURPOSE_GA, "resource": "population_base"})
        audit.finish(lake, it["seq"], {"status": "ok", "rows": 1})

    files = products.model_files()
    out = {
        "grants.load (YAML parse of config/grants.yml)": t(lambda i: grants.load()),
        "access_requests.approved_grants (SQLite open + read)": t(lambda i: access_requests.approved_grants(lake)),
        "query.authorize (both of the above + checks)": t(lambda i: query.authorize(
            lake, "ga_population_analyst", PURPOSE_GA, ["population_base"], base={}, meta=meta)),
        "Service.meta freshness check (stat of every model file)": t(lambda i: max(p.stat().st_mtime for p in
                                                                                   products.model_files())),
        "query.product_file (glob)": t(lambda i: query.product_file(lake, "population_base", v)),
        "query.column_names (Parquet footer)": t(lambda i: query.column_names(path)),
        "audit.begin + audit.finish (two durable group commits)": t(audited, 100),
        "masking.token (HMAC of the ID for the access record)": t(lambda i: masking.token(
            "id_number", people[i % len(people)]["id_number"], key, "sha256")),
        "AccessLog.record (per-person SQLite index)": t(lambda i: log.record(
            seq=10**9 + i, ts="2026-11-30T00:00:00+00:00", actor=actor, purpose=PURPOSE_GA, endpoint="lookup",
            resource="population_base", fields=cols, persons=["v1:" + "0" * 64]), 100),
        "DuckDB SELECT cols FROM read_parquet(?) WHERE key = ?": t(lambda i: con.execute(
            sql, [str(path), people[i % len(people)]["id_number"]]).fetchall()),
        "fastpath Index.lookup (warm)": t(lambda i: idx.lookup(people[i % len(people)]["id_number"], cols)),
    }
    out["model_files"] = len(files)
    return out


# ============================================================ a synthetic big lake (10 M) without the pipeline
def synthetic_lake(root: Path, n: int, chunk: int = 1_000_000) -> Path:
    """A lake whose only product is a synthetic ``population_base`` of ``n`` people, in the
    published layout (version 1, manifest, ``current``), written in row groups of 122,880 rows
    like DuckDB's. For service figures at a size the pipeline takes too long to build here; the
    columns and types are the published product's (renditions_bench.synthetic_population). IDs
    are random (division, birth date, sequence): about 3 % repeat at 10 M, so some keys have two
    rows, which the service and the index both return."""
    import datetime as dt
    import hashlib

    import pyarrow as pa
    import pyarrow.parquet as pq

    sys.path.insert(0, str(HERE))
    from renditions_bench import synthetic_population

    from govlake.storage import Lake

    lake = Lake(root).ensure()
    vdir = lake.version_dir("population_base", 1)
    vdir.mkdir(parents=True, exist_ok=False)
    data = vdir / "population_base.parquet"
    writer = None
    done = 0
    h = hashlib.sha256()
    while done < n:
        k = min(chunk, n - done)
        t = synthetic_population(k, seed=100 + done // chunk)
        t = t.set_column(t.schema.get_field_index("birth_date"), "birth_date",
                         t.column("birth_date").cast(pa.date32()))
        if writer is None:
            writer = pq.ParquetWriter(data, t.schema, compression="zstd")
        writer.write_table(t, row_group_size=122_880)
        done += k
        print(f"synthetic population_base: {done:,} rows", flush=True)
    writer.close()
    with open(data, "rb") as f:
        for b in iter(lambda: f.read(1 << 20), b""):
            h.update(b)
    schema = pq.read_schema(data)
    manifest = {"product": "population_base", "version": 1, "run_id": "synthetic",
                "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "row_count": n,
                "columns": [{"name": f.name, "type": str(f.type)} for f in schema],
                "files": [{"path": data.name, "sha256": h.hexdigest(), "rows": n}], "inputs": [],
                "gate": {"passed": True, "checks": 0, "failed": 0, "synthetic": True}}
    (vdir / "_manifest.json").write_text(json.dumps(manifest, ensure_ascii=False, indent=2), encoding="utf-8")
    lake.switch_current("population_base", 1)
    return data


# ============================================================ main
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--lake", type=Path)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--duration", type=float, default=15.0)
    ap.add_argument("--connections", type=int, default=16)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--fastpath", action="store_true", help="serve with the key index (benchmarks only)")
    ap.add_argument("--tool", choices=("wrk", "python"), default=None)
    ap.add_argument("--keys", type=int, default=20_000)
    ap.add_argument("--skip", nargs="*", default=[], choices=("whoami", "lookup", "verify", "sql", "analysts"))
    ap.add_argument("--micro", type=int, default=0, metavar="N",
                    help="only the in-process comparison Index vs DuckDB on N sampled keys")
    ap.add_argument("--cache-reads", action="store_true",
                    help="with --fastpath: also cache the grants/approved grants/model metadata re-reads "
                         "per request (an experiment: what the interfaces reach without them)")
    ap.add_argument("--encrypted", action="store_true",
                    help="with --micro: compare on an encrypted copy of the product file (ADR 0014)")
    ap.add_argument("--components", action="store_true",
                    help="only the in-process cost of each step of a lookup (writes to the lake's audit log)")
    ap.add_argument("--make-synthetic-lake", type=int, metavar="N",
                    help="first write a lake at --lake with a synthetic population_base of N people")
    ap.add_argument("--serve-fastpath", nargs=2, metavar=("CONFIG", "PORT"), help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if not (os.environ.get("GOVLAKE_TOKEN_KEY") or os.environ.get("GOVLAKE_TOKEN_KEY_FILE")):
        # a service in production has a join-token key: with none, lookups/verifications skip the
        # per-person access records (HMAC + SQLite) and would look cheaper than they are
        os.environ["GOVLAKE_TOKEN_KEY"] = os.urandom(32).hex()
        os.environ["GOVLAKE_BENCH_THROWAWAY_TOKEN_KEY"] = "1"
    if a.serve_fastpath:
        return serve_fastpath(a.serve_fastpath[0], int(a.serve_fastpath[1]))
    if not a.lake or not (a.out or a.make_synthetic_lake):
        ap.error("--lake and --out are required")
    if a.make_synthetic_lake:
        synthetic_lake(a.lake.resolve(), a.make_synthetic_lake)
        if not a.out:
            return 0
    if a.components:
        os.environ["GOVLAKE_LAKE_ROOT"] = str(a.lake.resolve())
        out = {"lake": str(a.lake.resolve()), "components_ms": components(a.lake.resolve())}
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps(out, ensure_ascii=False, indent=2), encoding="utf-8")
        print(json.dumps(out, ensure_ascii=False, indent=1))
        return 0
    if a.micro:
        out: dict = {"lake": str(a.lake.resolve())}
        os.environ["GOVLAKE_LAKE_ROOT"] = str(a.lake.resolve())
        micro(a.lake.resolve(), a.micro, out, encrypt=a.encrypted)
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps(out, ensure_ascii=False, indent=2), encoding="utf-8")
        print(json.dumps(out, ensure_ascii=False, indent=1))
        return 0
    import shutil

    import psutil

    from govlake.sharing.service.server import LocalServer, free_port

    tool = a.tool or ("wrk" if shutil.which("wrk") else "python")
    lake = a.lake.resolve()
    env = {**os.environ, "GOVLAKE_LAKE_ROOT": str(lake)}
    work = Path(tempfile.mkdtemp(prefix="service-bench-"))
    cfg = bench_config(work / "service.yml")
    tag = uuid.uuid4().hex[:6]
    # verifications: the 民政 marriage-registration app (L3, ID as a join token in its grant). The
    # 统计 role (tj_public_statistics) is aggregate-only and is refused verification (403) by design.
    ids = {"ga": f"bench-ga-{tag}", "tj": f"bench-mz-{tag}"}
    secrets = {ids["ga"]: add_client(env, ids["ga"], "app", "ga_population_analyst", "公安", "人口核查压测"),
               ids["tj"]: add_client(env, ids["tj"], "app", "mz_marriage_analyst", "民政", "婚姻核验压测")}
    analyst_ids = [f"bench-an{i}-{tag}" for i in range(8)]
    for i, cid in enumerate(analyst_ids):
        secrets[cid] = add_client(env, cid, "analyst", "tj_public_statistics", "统计", f"分析员{i}")
    people = sample_people(lake, a.keys)
    rng = random.Random(9)
    lookups = [{"purpose": PURPOSE_GA, "key": p["id_number"]} for p in people]
    verifies = [{"resource": "population_base", "purpose": PURPOSE_MZ,
                 "claims": [{"id_number": p["id_number"],
                             "name": p["name"] if rng.random() < 0.5 else p["name"] + "某"}]} for p in people]

    port = free_port()
    log = work / "serve.log"
    if a.cache_reads:
        if not a.fastpath:
            ap.error("--cache-reads needs --fastpath")
        env["GOVLAKE_BENCH_CACHE_READS"] = "1"
    if a.fastpath:
        cmd = [sys.executable, str(Path(__file__).resolve()), "--serve-fastpath", str(cfg), str(port)]
    else:
        cmd = [GOVLAKE, "serve", "--config", str(cfg), "--port", str(port), "--workers", str(a.workers)]
    srv = LocalServer(env=env, port=port, log=log)
    srv.proc = subprocess.Popen(cmd, env=env, stdout=open(log, "ab"), stderr=subprocess.STDOUT)
    import httpx

    deadline = time.monotonic() + 120
    while True:
        if srv.proc.poll() is not None:
            raise SystemExit(f"server exited {srv.proc.returncode}; see {log}")
        try:
            httpx.get(srv.url + "/openapi.json", timeout=1.0)
            break
        except httpx.HTTPError:
            if time.monotonic() > deadline:
                srv.stop()
                raise SystemExit("server did not start")
            time.sleep(0.2)
    pid = srv.proc.pid
    cpu0 = _cpu_split(pid)
    result: dict = {"lake": str(lake), "fastpath": a.fastpath, "cache_reads": a.cache_reads,
                    "token_key": "throwaway" if os.environ.get("GOVLAKE_BENCH_THROWAWAY_TOKEN_KEY") else "configured", "workers": a.workers, "load_tool": tool,
                    "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                                "mem_gib": round(psutil.virtual_memory().total / 2**30, 1)},
                    "note": "server and load generator share the same 2 cores; the generator's CPU is "
                            "taken from the server", "targets": TARGETS, "phases": {}}
    try:
        from govlake.storage import Lake
        from govlake import query

        L = Lake(lake)
        v = L.current_version("population_base")
        import pyarrow.parquet as pq

        md = pq.ParquetFile(query.product_file(L, "population_base", v)).metadata
        result["population_base"] = {"version": v, "rows": md.num_rows, "row_groups": md.num_row_groups}
        result["rss_start_mb"] = round(psutil.Process(pid).memory_info().rss / 2**20, 1)
        tok_ga = token(srv.url, ids["ga"], secrets[ids["ga"]])
        tok_tj = token(srv.url, ids["tj"], secrets[ids["tj"]])
        gen = (lambda path, tok, bodies, t: run_wrk(srv.url, path, tok, bodies, a.duration, a.connections, work, t)) \
            if tool == "wrk" else \
            (lambda path, tok, bodies, t: run_python(srv.url, path, tok, bodies, a.duration, a.connections))
        with RssSampler(pid) as rs:
            if "whoami" not in a.skip:  # the floor: HTTP + FastAPI + bearer check, no data, no audit
                print("whoami ...", flush=True)
                result["phases"]["whoami_floor"] = _get_phase(srv.url, tok_ga, a, tool, work)
            if "lookup" not in a.skip:
                # first request builds the index when --fastpath (timed separately, not in the phase)
                t = time.perf_counter()
                r = httpx.post(srv.url + "/v1/resources/population_base/lookup",
                               headers={"Authorization": f"Bearer {tok_ga}"}, json=lookups[0], timeout=120)
                assert r.status_code == 200 and r.json()["records"], r.text[:300]
                result["phases"]["lookup_first_request_s"] = round(time.perf_counter() - t, 3)
                print("lookup ...", flush=True)
                result["phases"]["lookup"] = gen("/v1/resources/population_base/lookup", tok_ga, lookups, "lookup")
            if "verify" not in a.skip:
                r = httpx.post(srv.url + "/v1/verify", headers={"Authorization": f"Bearer {tok_tj}"},
                               json=verifies[0], timeout=120)
                assert r.status_code == 200 and r.json()["results"][0]["fields"], r.text[:300]
                print("verify ...", flush=True)
                result["phases"]["verify"] = gen("/v1/verify", tok_tj, verifies, "verify")
            result["rss_after_interfaces_mb"] = round(rs.now() / 2**20, 1)
            result["peak_rss_interfaces_mb"] = round(rs.peak / 2**20, 1)
        if "sql" not in a.skip:
            print("sql ...", flush=True)
            tok_an = token(srv.url, analyst_ids[0], secrets[analyst_ids[0]])
            for name, sql in (("l1_count", COUNT), ("groupby_division_gender", GROUP_BY)):
                times, last = [], None
                for _ in range(5):
                    dtm, st, body = sql_once(srv.url, tok_an, sql)
                    if st != 200:
                        raise SystemExit(f"{name}: HTTP {st}: {body}")
                    times.append(dtm)
                    last = body
                result["phases"][name] = {"runs": len(times), "first_s": round(times[0], 3),
                                          "median_s": round(statistics.median(times), 3),
                                          "max_s": round(max(times), 3), "rows": last.get("row_count"),
                                          "sample": last.get("rows", [])[:2]}
        if "analysts" not in a.skip:
            print("8 analysts ...", flush=True)
            toks = [token(srv.url, cid, secrets[cid]) for cid in analyst_ids]
            with RssSampler(pid) as rs:
                base = rs.now()
                res = analysts(srv.url, toks, a.duration)
            res["rss_before_mb"] = round(base / 2**20, 1)
            res["peak_rss_mb"] = round(rs.peak / 2**20, 1)
            result["phases"]["analysts_8"] = res
    finally:
        if a.fastpath:
            text = log.read_text(encoding="utf-8", errors="replace")
            result["fastpath_engaged"] = {"lookup": "fastpath: lookup served" in text,
                                          "verify": "fastpath: verification served" in text}
        result["cpu_s"] = {k: round(v - cpu0[k], 1) for k, v in _cpu_split(pid).items()}
        result["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
        srv.stop()
    ph = result["phases"]

    def ok(v, lim, le=True):
        return None if v is None else (v <= lim if le else v >= lim)

    g = lambda k, f: (ph.get(k) or {}).get(f)  # noqa: E731
    result["verdict"] = {
        "lookup_rps": ok(g("lookup", "requests_per_s"), TARGETS["lookup_rps"], le=False),
        "lookup_p99": ok(g("lookup", "p99_ms"), TARGETS["lookup_p99_ms"]),
        "verify_rps": ok(g("verify", "requests_per_s"), TARGETS["verify_rps"], le=False),
        "verify_p99": ok(g("verify", "p99_ms"), TARGETS["verify_p99_ms"]),
        "l1_count": ok(g("l1_count", "median_s"), TARGETS["count_s"]),
        "groupby": ok(g("groupby_division_gender", "median_s"), TARGETS["groupby_s"]),
        "peak_rss_8_analysts": ok((g("analysts_8", "peak_rss_mb") or 0) / 1024 if g("analysts_8", "peak_rss_mb")
                                  else None, TARGETS["peak_rss_gib"]),
    }
    result["cpu_s"]["other_processes"] = round(result["cpu_s"]["machine"] - result["cpu_s"]["server"]
                                               - result["cpu_s"]["bench_and_load_generator"], 1)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(result, ensure_ascii=False, indent=2), encoding="utf-8")
    print(json.dumps({k: v for k, v in result.items() if k in ("phases", "verdict", "population_base", "cpu_s")},
                     ensure_ascii=False, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
