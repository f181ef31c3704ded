"""The sharing service as a real uvicorn server on loopback: identity, refusals, limits, SQL,
lookup, verification (核验), access decisions, audit before work, versions per response."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pyarrow as pa
import pyarrow.ipc as ipc
import pyarrow.parquet as pq
import pytest

import access_support as S
from govlake import audit, masking
from govlake.sharing.service.server import LocalServer
from govlake.storage import Lake

pytestmark = pytest.mark.integration

ROWS = 300
INTERFACES = {
    "population_base": "        interface: {key: id_number, verify: [name, gender_code, birth_date, division_code]}\n",
    "marriage_household_check": "        interface: {key: id_number, verify: [name, household_status_code]}\n",
}
GOVLAKE = str(Path(sys.executable).with_name("govlake"))


STATS_ROLE = """
  stats_agg:
    title: 统计 汇总
    department: 统计
    clearance: L1
    purposes: [人口统计分析]
    expires: 2099-12-31
    aggregate_only: true
    min_group_size: 10
    products: [population_base]
"""
ETHNICITIES = ["01", "01", "01", "02", "03", "05"]


def _models_yaml() -> str:
    text = S.SHARED_MODELS_YAML
    gender = "        description: 性别代码 GB/T 2261.1\n        config: {meta: {grade: L2, element: gender_code}}\n"
    text = text.replace(gender, gender + "      - name: ethnicity_code\n        config: {meta: {grade: L2, element: ethnicity_code}}\n", 1)
    for name, line in INTERFACES.items():
        anchor = f"  - name: {name}\n"
        i = text.index(anchor)
        j = text.index("    columns:\n", i)
        text = text[:j] + line + text[j:]
    return text


@pytest.fixture(scope="module")
def svc(tmp_path_factory):
    root = tmp_path_factory.mktemp("svc")
    lake = Lake(root / "lake").ensure()
    S.write_dbt_dir(root, _models_yaml())
    grants = S.write_grants(root, S.GRANTS_YAML + STATS_ROLE)
    env = {**os.environ, "GOVLAKE_LAKE_ROOT": str(lake.root), "GOVLAKE_PROJECT_ROOT": str(root),
           "GOVLAKE_GRANTS_FILE": str(grants), "GOVLAKE_WORK_DIR": str(root / "work"),
           "GOVLAKE_TOKEN_KEY": "5a" * 32}
    # a service config with a tight rate limit for one kind, to see 429s
    (root / "config").mkdir()
    (root / "config" / "service.yml").write_text(
        "rate_limits:\n  default: {per_second: 500, burst: 1000}\n  citizen_portal: {per_second: 1, burst: 3}\n"
        "requests: {max_body_bytes: 200000, max_claims: 1000}\nquery: {timeout_seconds: 5, memory_limit: 256MB}\n",
        encoding="utf-8")
    (root / "config" / "approvers.yml").write_text(
        "departments:\n  公安: [王建国]\n  民政: [李秀英, 周平]\n", encoding="utf-8")
    rows = S.people(ROWS)
    for i, r in enumerate(rows):
        r["ethnicity_code"] = ETHNICITIES[i % len(ETHNICITIES)] if i % 50 else "37"  # 37: a small group
    S.publish(lake, "population_base", rows)
    S.publish(lake, "marriage_household_check", [
        {"id_number": r["id_number"], "name": r["name"], "household_status_code": "20",
         "certificate_number": f"J{i:08d}"} for i, r in enumerate(rows[:100])])
    creds = {}
    for cid, kind, role, dept, name in [
        ("ga-app", "app", "ga_analyst", "公安", "人口核查系统"),
        ("mz-app", "app", "mz_analyst", "民政", "婚姻登记系统"),
        ("tj-analyst", "analyst", "stats_public", "统计", "周平"),
        ("portal", "citizen_portal", "stats_public", "数据管理局", "市民门户"),
        ("tj-stats", "analyst", "stats_agg", "统计", "统计汇总员"),
        ("ga-approver", "approver", None, "公安", "王建国"),
        ("mz-approver", "approver", None, "民政", "李秀英"),
        ("mz-approver-zp", "approver", None, "民政", "周平"),
    ]:
        args = [GOVLAKE, "clients", "add", cid, "--kind", kind, "--department", dept, "--name", name, "--json"]
        if role:
            args += ["--role", role]
        out = subprocess.run(args, env=env, capture_output=True, text=True, check=True)
        creds[cid] = json.loads(out.stdout)["client_secret"]
    server = LocalServer(env=env, log=root / "serve.log").start()
    yield {"url": server.url, "creds": creds, "lake": lake, "rows": rows, "env": env, "root": root,
           "server": server}
    server.stop()


def token(svc, cid: str) -> str:
    for _ in range(20):  # like a real client, wait out a rate limit
        r = httpx.post(svc["url"] + "/v1/oauth/token", data={
            "grant_type": "client_credentials", "client_id": cid, "client_secret": svc["creds"][cid]})
        if r.status_code != 429:
            break
        time.sleep(float(r.headers["Retry-After"]))
    assert r.status_code == 200, r.text
    return r.json()["access_token"]


def call(svc, cid, path, body=None, tok=None):
    h = {"Authorization": f"Bearer {tok or token(svc, cid)}"}
    if body is None:
        return httpx.get(svc["url"] + path, headers=h, timeout=30)
    return httpx.post(svc["url"] + path, headers=h, json=body, timeout=30)


def patient(svc, cid, path, body=None):
    """Like a real client: on 429 wait for Retry-After, then try again."""
    for _ in range(20):
        r = call(svc, cid, path, body)
        if r.status_code != 429:
            return r
        time.sleep(float(r.headers["Retry-After"]))
    raise AssertionError(f"{cid} still rate-limited on {path}")


def problem(r, status):
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json"), r.headers
    body = r.json()
    assert set(body) >= {"type", "title", "status", "detail"} and body["status"] == status
    return body


# ---- identity -------------------------------------------------------------------------------
def test_role_comes_from_the_registration_not_the_request(svc):
    me = call(svc, "tj-analyst", "/v1/whoami").json()
    assert me["role"] == "stats_public" and me["department"] == "统计"
    # asking for clear IDs in any way the old CLI allowed: a role field is not even accepted
    r = call(svc, "tj-analyst", "/v1/query", {"sql": "select id_number from population_base",
                                              "purpose": "人口统计分析", "role": "ga_analyst"})
    problem(r, 422)
    r = call(svc, "tj-analyst", "/v1/query", {"sql": "select id_number from population_base limit 5",
                                              "purpose": "人口统计分析"})
    assert r.status_code == 200, r.text
    clear = {p["id_number"] for p in svc["rows"]}
    got = [row[0] for row in r.json()["rows"]]
    assert got and not (set(got) & clear)  # masked for an L1 role


def test_401_cases(svc):
    problem(httpx.get(svc["url"] + "/v1/catalog"), 401)
    problem(httpx.get(svc["url"] + "/v1/catalog", headers={"Authorization": "Bearer not.a.jwt"}), 401)
    problem(httpx.post(svc["url"] + "/v1/oauth/token", data={
        "grant_type": "client_credentials", "client_id": "ga-app", "client_secret": "wrong"}), 401)
    problem(httpx.post(svc["url"] + "/v1/oauth/token", data={
        "grant_type": "client_credentials", "client_id": "nobody", "client_secret": "x"}), 401)
    # a token signed with another key
    import jwt as pyjwt

    forged = pyjwt.encode({"sub": "ga-app", "gen": 1, "aud": "govlake", "iss": "govlake-sharing-service",
                           "iat": int(time.time()), "exp": int(time.time()) + 60}, "k" * 40, algorithm="HS256")
    problem(call(svc, "ga-app", "/v1/whoami", tok=forged), 401)


def test_rotation_and_revocation_take_effect_at_once(svc):
    env = svc["env"]
    subprocess.run([GOVLAKE, "clients", "add", "tmp-app", "--kind", "app", "--role", "ga_analyst",
                    "--department", "公安", "--name", "临时系统", "--json"], env=env, check=True,
                   capture_output=True, text=True)
    secret = json.loads(subprocess.run([GOVLAKE, "clients", "rotate", "tmp-app", "--json"], env=env, check=True,
                                       capture_output=True, text=True).stdout)["client_secret"]
    svc["creds"]["tmp-app"] = secret
    tok = token(svc, "tmp-app")
    assert call(svc, "tmp-app", "/v1/whoami", tok=tok).status_code == 200
    new = json.loads(subprocess.run([GOVLAKE, "clients", "rotate", "tmp-app", "--json"], env=env, check=True,
                                    capture_output=True, text=True).stdout)["client_secret"]
    body = problem(call(svc, "tmp-app", "/v1/whoami", tok=tok), 401)  # old token dead at once
    assert "rotated" in body["detail"]
    svc["creds"]["tmp-app"] = new
    tok = token(svc, "tmp-app")
    assert call(svc, "tmp-app", "/v1/whoami", tok=tok).status_code == 200
    subprocess.run([GOVLAKE, "clients", "revoke", "tmp-app", "--reason", "系统下线"], env=env, check=True,
                   capture_output=True)
    assert "revoked" in problem(call(svc, "tmp-app", "/v1/whoami", tok=tok), 401)["detail"]
    problem(httpx.post(svc["url"] + "/v1/oauth/token", data={
        "grant_type": "client_credentials", "client_id": "tmp-app", "client_secret": new}), 401)


def test_registry_stores_no_secret(svc):
    db = (svc["lake"].meta_root / "service" / "clients.sqlite").read_bytes()
    for secret in svc["creds"].values():
        assert secret.encode() not in db
    assert oct((svc["lake"].meta_root / "service").stat().st_mode & 0o777) == "0o700"


def test_403_422_429_and_size_limit(svc):
    # 403: a purpose that is not granted, a product not granted
    assert "may only query for" in problem(call(svc, "tj-analyst", "/v1/query", {
        "sql": "select 1", "purpose": "好奇"}), 403)["detail"]
    assert "marriage_household_check" in problem(call(svc, "tj-analyst", "/v1/query", {
        "sql": "select * from marriage_household_check", "purpose": "人口统计分析"}), 403)["detail"]
    # 422: limits a caller cannot lift
    for t in ("inf", "nan", 1e9, -1, 0):
        r = httpx.post(svc["url"] + "/v1/query", headers={"Authorization": f"Bearer {token(svc, 'ga-app')}",
                                                          "Content-Type": "application/json"},
                       content=json.dumps({"sql": "select 1", "purpose": "人口信息核查", "timeout": t}
                                          ).replace('"inf"', "Infinity").replace('"nan"', "NaN"))
        assert r.status_code == 422, (t, r.text)
    problem(call(svc, "ga-app", "/v1/query", {"sql": "select 1", "purpose": "人口信息核查", "limit": 0}), 422)
    # 413: body too large
    r = call(svc, "ga-app", "/v1/query", {"sql": "select 1 " + "-" * 300_000, "purpose": "人口信息核查"})
    assert r.status_code == 413
    # 429 with Retry-After for the citizen portal (burst 3)
    tok = token(svc, "portal")
    codes = [call(svc, "portal", "/v1/whoami", tok=tok) for _ in range(8)]
    limited = [r for r in codes if r.status_code == 429]
    assert limited and int(limited[0].headers["Retry-After"]) >= 1
    problem(limited[0], 429)


FORBIDDEN_OVER_API = [
    "select * from read_csv('/etc/passwd')",
    "attach '/tmp/x.db' as x",
    "copy population_base to '/tmp/out.csv'",
    "install httpfs",
    "set enable_external_access = true",
    "select * from duckdb_settings()",
    "select * from information_schema.tables",
    "select 1; select 2",
    "select * from '/etc/passwd'",
]


@pytest.mark.parametrize("sql", FORBIDDEN_OVER_API)
def test_parser_refusals_hold_through_the_api(svc, sql):
    body = problem(call(svc, "ga-app", "/v1/query", {"sql": sql, "purpose": "人口信息核查"}), 422)
    assert body["reason"]


def test_sql_formats_and_versions(svc):
    tok = token(svc, "ga-app")
    sql = "select id_number, name from population_base order by id_number"
    j = call(svc, "ga-app", "/v1/query", {"sql": sql, "purpose": "人口信息核查", "limit": None}, tok).json()
    assert j["row_count"] == ROWS and j["versions"] == {"population_base": 1}
    names = {r["name"] for r in svc["rows"]}
    assert {r[1] for r in j["rows"]} == names  # L4 role: clear, Chinese round-trips
    r = call(svc, "ga-app", "/v1/query", {"sql": sql, "purpose": "人口信息核查", "format": "parquet",
                                          "limit": None}, tok)
    t = pq.read_table(io.BytesIO(r.content))
    assert t.num_rows == ROWS and t.column("name").to_pylist() == [x[1] for x in j["rows"]]
    r = call(svc, "ga-app", "/v1/query", {"sql": sql, "purpose": "人口信息核查", "format": "arrow",
                                          "limit": 10}, tok)
    assert ipc.open_stream(r.content).read_all().num_rows == 10
    r = call(svc, "ga-app", "/v1/query", {"sql": "select '=1+2' as f, '-x' as g, -3 as n", "purpose": "人口信息核查",
                                          "format": "csv"}, tok)
    assert r.text.splitlines() == ["f,g,n", "'=1+2,'-x,-3"]


def test_masking_equals_per_query_rules(svc):
    """L2 民政: id tokenized, name/phone/address/birth masked — the same values as masking.py."""
    key = bytes.fromhex("5a" * 32)
    j = call(svc, "mz-app", "/v1/query", {"sql": "select id_number, name, phone, address, birth_date "
                                                 "from population_base", "purpose": "婚姻登记核验",
                                          "limit": None}).json()
    got = {r[0]: r[1:] for r in j["rows"]}
    for p in svc["rows"]:
        t = masking.token("id_number", p["id_number"], key, "sha256")
        assert got[t] == [masking.mask("name", p["name"], False), masking.mask("phone", p["phone"], False),
                          masking.mask("address", p["address"], False),
                          masking.mask("birth_date", p["birth_date"], False)]


def test_lookup(svc):
    p = svc["rows"][5]
    j = call(svc, "ga-app", "/v1/resources/population_base/lookup",
             {"purpose": "人口信息核查", "key": p["id_number"]}).json()
    assert j["version"] == 1 and len(j["records"]) == 1 and j["records"][0]["name"] == p["name"]
    # 民政 sees the ID as a token; it may look up by clear ID (compared as a token) or by token
    j2 = call(svc, "mz-app", "/v1/resources/population_base/lookup",
              {"purpose": "婚姻登记核验", "key": p["id_number"]}).json()
    rec = j2["records"][0]
    assert rec["id_number"].startswith("v1:") and rec["name"] == masking.mask("name", p["name"])
    j3 = call(svc, "mz-app", "/v1/resources/population_base/lookup",
              {"purpose": "婚姻登记核验", "key": rec["id_number"]}).json()
    assert j3["records"] == j2["records"]
    # L1 statistics: the ID is masked for it, so no lookup by ID
    problem(call(svc, "tj-analyst", "/v1/resources/population_base/lookup",
                 {"purpose": "人口统计分析", "key": p["id_number"]}), 403)


def test_verification_answers_and_reveals_nothing(svc):
    people = svc["rows"][:4]
    claims = [
        {"id_number": people[0]["id_number"], "name": people[0]["name"]},  # true
        {"id_number": people[1]["id_number"], "name": people[1]["name"] + "甲"},  # wrong name
        {"id_number": people[2]["id_number"].lower().replace("x", "x"), "name": " " + people[2]["name"] + " ",
         "gender_code": people[2]["gender_code"]},  # formatting does not decide
        {"id_number": "110105190001010000", "name": "无此人"},  # no such person: same as no match
    ]
    # 统计 (L1) has no clearance for ID or name, yet may verify
    r = call(svc, "tj-analyst", "/v1/verify", {"resource": "population_base", "purpose": "人口统计分析",
                                               "claims": claims})
    assert r.status_code == 200, r.text
    j = r.json()
    assert [x["fields"] for x in j["results"]] == [
        {"name": "match"}, {"name": "no_match"}, {"name": "match", "gender_code": "match"}, {"name": "no_match"}]
    text = r.text
    for p in people:  # no data value in the answer, not even masked
        for v in (p["name"], p["id_number"], masking.mask("name", p["name"]), p["birth_date"]):
            assert str(v) not in text
    assert set(j) == {"resource", "version", "results", "audit_seq"}
    # fields outside the interface are refused; too many claims refused
    problem(call(svc, "tj-analyst", "/v1/verify", {"resource": "population_base", "purpose": "人口统计分析",
                                                   "claims": [{"id_number": people[0]["id_number"],
                                                               "phone": people[0]["phone"]}]}), 403 if False else 422)
    many = [{"id_number": people[0]["id_number"], "name": "x"}] * 1001
    problem(call(svc, "ga-app", "/v1/verify", {"resource": "population_base", "purpose": "人口信息核查",
                                               "claims": many}), 422)
    ok = call(svc, "ga-app", "/v1/verify", {"resource": "population_base", "purpose": "人口信息核查",
                                            "claims": many[:1000]})
    assert ok.status_code == 200 and len(ok.json()["results"]) == 1000


def test_every_request_is_audited_before_it_runs(svc):
    lake = svc["lake"]
    n0 = len(audit.entries(lake))
    call(svc, "ga-app", "/v1/query", {"sql": "select count(*) from population_base", "purpose": "人口信息核查"})
    new = audit.entries(lake)[n0:]
    kinds = [e["kind"] for e in new]
    assert kinds == ["request", "outcome"], kinds
    intent, outcome = new
    assert intent["payload"]["actor"]["client_id"] == "ga-app" and intent["payload"]["role"] == "ga_analyst"
    assert intent["payload"]["request_kind"] == "query" and outcome["payload"]["intent_seq"] == intent["seq"]
    assert outcome["payload"]["outcome"]["rows"] == 1 and len(outcome["payload"]["outcome"]["result_sha256"]) == 64
    assert audit.verify(lake).ok


def test_killed_request_leaves_its_intent(svc, tmp_path):
    """A server killed while a request runs: the intent is in the log, with no outcome."""
    env = svc["env"]
    server = LocalServer(env=env, log=tmp_path / "kill.log").start()
    try:
        tok = token({**svc, "url": server.url}, "ga-app")
        n0 = len(audit.entries(svc["lake"]))
        slow = "select count(*) from range(100000000000) a"

        def fire():
            try:
                httpx.post(server.url + "/v1/query", headers={"Authorization": f"Bearer {tok}"},
                           json={"sql": slow, "purpose": "人口信息核查"}, timeout=30)
            except httpx.HTTPError:
                pass

        t = threading.Thread(target=fire)
        t.start()
        deadline = time.time() + 20
        while time.time() < deadline and not any(
                e["kind"] == "request" and e["payload"].get("sql") == slow for e in audit.entries(svc["lake"])[n0:]):
            time.sleep(0.05)
        os.kill(server.proc.pid, signal.SIGKILL)
        server.proc.wait()
        t.join()
    finally:
        server.stop()
    new = audit.entries(svc["lake"])[n0:]
    intents = [e for e in new if e["kind"] == "request" and e["payload"].get("sql") == slow]
    assert len(intents) == 1
    assert not [e for e in new if e["kind"] == "outcome" and e["payload"]["intent_seq"] == intents[0]["seq"]]
    v = audit.verify(svc["lake"])
    assert v.ok, str(v)


def test_timeout_is_the_servers(svc):
    r = call(svc, "ga-app", "/v1/query", {"sql": "select count(*) from range(100000000000) a, range(10) b",
                                          "purpose": "人口信息核查"})
    assert r.status_code in (422, 504) and "timed out after 5" in r.text


def test_access_decisions_need_an_authenticated_approver(svc):
    lake = svc["lake"]
    # 民政 app asks for marriage_household_check for a new purpose? It is 民政's own product; ask as 统计
    r = call(svc, "tj-analyst", "/v1/access-requests", {"product": "marriage_household_check",
                                                        "purpose": "人口统计分析"})
    assert r.status_code == 200, r.text
    rid = r.json()["request_id"] if "request_id" in r.json() else r.json()["id"]
    assert rid.startswith("R-")
    # an app cannot approve; another department's approver cannot; the filer cannot approve
    problem(call(svc, "ga-app", f"/v1/access-requests/{rid}/approve", {"reason": "ok"}), 403)
    body = problem(call(svc, "ga-approver", f"/v1/access-requests/{rid}/approve", {"reason": "符合"}), 403)
    assert "民政" in body["detail"]  # 公安's approver is not of the owning department
    body = problem(call(svc, "mz-approver-zp", f"/v1/access-requests/{rid}/approve", {"reason": "符合"}), 403)
    assert "filed this request" in body["detail"]  # 周平 filed it (as tj-analyst) and cannot approve it
    r = call(svc, "mz-approver", f"/v1/access-requests/{rid}/reject", {"reason": "用途不符"})
    assert r.status_code == 200 and r.json()["decided_by"] == "李秀英"


def gov(svc, cid, *argv):
    env = {**svc["env"], "GOVLAKE_CLIENT_ID": cid, "GOVLAKE_CLIENT_SECRET": svc["creds"][cid],
           "GOVLAKE_SERVICE_URL": svc["url"]}
    # the analyst's shell: no lake, grants or key in reach (the service holds them)
    for k in ("GOVLAKE_LAKE_ROOT", "GOVLAKE_GRANTS_FILE", "GOVLAKE_TOKEN_KEY"):
        env.pop(k, None)
    return subprocess.run([GOVLAKE, *argv], env=env, capture_output=True, text=True, timeout=120)


def test_cli_access_session(svc, tmp_path):
    """govlake access/query as service clients: request → approve → query → revoke → refused."""
    p = gov(svc, "tj-analyst", "access", "request", "--product", "marriage_household_check",
            "--purpose", "人口统计分析", "--json")
    assert p.returncode == 0, p.stderr
    rid = json.loads(p.stdout)["request_id"]
    p = gov(svc, "ga-approver", "access", "approve", rid, "--days", "30", "--reason", "x")
    assert p.returncode == 3 and "REFUSED" in p.stderr and "民政" in p.stderr
    p = gov(svc, "mz-approver", "access", "approve", rid, "--days", "30", "--reason", "符合条件", "--json")
    assert p.returncode == 0, p.stderr
    grant = json.loads(p.stdout)
    assert grant["granted_by"] == "李秀英" and grant["state"] == "active"
    p = gov(svc, "tj-analyst", "query", "--purpose", "人口统计分析", "--format", "csv",
            "select household_status_code, count(*) as n from marriage_household_check group by 1")
    # granted, but household_status_code (L2) is still withheld from an L1 role: NULL
    assert p.returncode == 0, p.stderr
    n = len(svc["lake"].manifest("marriage_household_check") and
            pq.read_table(next(svc["lake"].current_dir("marriage_household_check").glob("*.parquet"))))
    assert p.stdout.splitlines() == ["household_status_code,n", f",{n}"]
    out = tmp_path / "r.parquet"
    p = gov(svc, "mz-app", "query", "--purpose", "婚姻登记核验", "--format", "parquet", "--output", str(out),
            "--limit", "25", "select id_number, name from population_base order by name")
    assert p.returncode == 0, p.stderr
    t = pq.read_table(out)
    assert t.num_rows == 25 and all(v.startswith("v1:") for v in t.column("id_number").to_pylist())
    p = gov(svc, "tj-analyst", "query", "--purpose", "人口统计分析", "select * from read_csv('/etc/passwd')")
    assert p.returncode == 3 and "REFUSED" in p.stderr and "read_csv" in p.stderr and "root:" not in p.stdout
    p = gov(svc, "mz-approver", "access", "revoke", grant["grant_id"], "--reason", "结束")
    assert p.returncode == 0 and "revoked" in p.stdout
    p = gov(svc, "tj-analyst", "query", "--purpose", "人口统计分析", "select count(*) from marriage_household_check")
    assert p.returncode == 3 and "revoked" in p.stderr
    p = gov(svc, "tj-analyst", "verify", "--resource", "population_base", "--purpose", "人口统计分析",
            f"id_number={svc['rows'][0]['id_number']},name={svc['rows'][0]['name']}")
    assert p.returncode == 0 and json.loads(p.stdout)["results"][0]["fields"] == {"name": "match"}


def test_one_version_per_response_during_publishes(svc):
    """A reader hammering the API while new versions are published sees exactly one version
    per response (row count, certificate marks and version agree)."""
    lake = svc["lake"]
    base = svc["rows"]
    first_read = threading.Event()
    v0 = lake.current_version("marriage_household_check")

    def publisher():
        first_read.wait(30)
        for n in range(1, 7):
            S.publish(lake, "marriage_household_check", [
                {"id_number": r["id_number"], "name": r["name"], "household_status_code": "20",
                 "certificate_number": f"V{n}"} for r in base[: 50 + 10 * n]])
            time.sleep(0.2)

    t = threading.Thread(target=publisher)
    t.start()
    tok = token(svc, "ga-app")
    seen = set()
    try:
        while t.is_alive():
            j = call(svc, "ga-app", "/v1/query", {
                "sql": "select count(*) as n, min(certificate_number) c, max(certificate_number) d "
                       "from marriage_household_check", "purpose": "人口信息核查"}, tok).json()
            v = j["versions"]["marriage_household_check"]
            n, c, d = j["rows"][0]
            if v <= v0:
                assert (n, c, d) == (100, "J00000000", "J00000099"), j
            else:
                k = v - v0
                assert n == 50 + 10 * k and c == d == f"V{k}", j
            seen.add(v)
            first_read.set()
    finally:
        t.join()
    assert len(seen) >= 3, seen


def test_per_person_access_records(svc):
    """A lookup and a verification of a person leave a record the citizen portal can read; an
    aggregate leaves none; the store holds no clear ID number."""
    p, q = svc["rows"][40], svc["rows"][41]
    key = bytes.fromhex("5a" * 32)
    tok_p, tok_q = (masking.token("id_number", x["id_number"], key, "sha256") for x in (p, q))
    before = patient(svc, "portal", "/v1/persons/accesses", {"id_number": p["id_number"]}).json()["accesses"]
    call(svc, "ga-app", "/v1/resources/population_base/lookup", {"purpose": "人口信息核查", "key": p["id_number"]})
    call(svc, "tj-analyst", "/v1/verify", {"resource": "population_base", "purpose": "人口统计分析",
                                           "claims": [{"id_number": p["id_number"], "name": "某某"}]})
    call(svc, "ga-app", "/v1/query", {"sql": "select count(*) from population_base", "purpose": "人口信息核查"})
    call(svc, "ga-app", "/v1/query", {"sql": f"select name from population_base where id_number = '{q['id_number']}'",
                                      "purpose": "人口信息核查"})  # returns no key column: not attributable
    call(svc, "mz-app", "/v1/query", {"sql": "select id_number, name from population_base", "purpose": "婚姻登记核验",
                                      "limit": None})  # row-level: every person returned (as tokens)
    after = patient(svc, "portal", "/v1/persons/accesses", {"id_number": p["id_number"]}).json()["accesses"]
    new = after[len(before):]
    assert [(a["interface"], a["client_id"], a["department"], a["purpose"], a["resource"]) for a in new] == [
        ("lookup", "ga-app", "公安", "人口信息核查", "population_base"),
        ("verify", "tj-analyst", "统计", "人口统计分析", "population_base"),
        ("query", "mz-app", "民政", "婚姻登记核验", "population_base"),
    ]
    assert new[1]["fields"] == ["name"] and "name" in new[0]["fields"]
    by_token = patient(svc, "portal", f"/v1/persons/{tok_p}/accesses").json()["accesses"]
    assert by_token == after
    # only a citizen portal may ask
    problem(call(svc, "ga-app", f"/v1/persons/{tok_p}/accesses"), 403)
    # the store is by token: no clear ID number in it
    store = b"".join(f.read_bytes() for f in (svc["lake"].meta_root / "service").glob("accesses.sqlite*"))
    assert p["id_number"].encode() not in store and bytes.fromhex(tok_p[3:]) in store
    # the operator's command gives the same list
    env = {**svc["env"]}
    out = subprocess.run([GOVLAKE, "accesses", "--id-number", p["id_number"], "--json"], env=env,
                         capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == after


def test_statistics_role_counts_groups_and_suppresses_small_cells(svc):
    """An aggregate-only role counts people by gender, ethnicity, age band and division; cells
    under k=10 are removed (and counted); row-level queries, lookups and verifications are refused."""
    from collections import Counter

    rows = svc["rows"]

    def q(sql):
        r = call(svc, "tj-stats", "/v1/query", {"sql": sql, "purpose": "人口统计分析", "limit": None})
        assert r.status_code == 200, r.text
        return r.json()

    def expected(key):
        c = Counter(key(r) for r in rows)
        return {k: n for k, n in c.items() if n >= 10}, sum(1 for n in c.values() if n < 10)

    for col in ("gender_code", "ethnicity_code", "division_code"):
        j = q(f"select {col}, count(*) as n from population_base group by 1")
        want, small = expected(lambda r: r[col])
        assert {k: n for k, n in j["rows"]} == want, col
        assert j["suppressed_groups"] == small and j["min_group_size"] == 10
    assert "37" not in {k for k, _ in q("select ethnicity_code, count(*) from population_base group by 1")["rows"]}
    # age band from the generalized birth date (its year)
    j = q("select (2026 - cast(birth_date as integer)) // 10 * 10 as band, count(*) from population_base group by 1")
    want, small = expected(lambda r: (2026 - int(r["birth_date"][:4])) // 10 * 10)
    assert {k: n for k, n in j["rows"]} == want and j["suppressed_groups"] == small
    # the address is generalized to its county division; the phone and name are withheld
    j = q("select address, count(*) from population_base group by 1")
    assert {k for k, _ in j["rows"]} == {name for _, name in S.DIVISIONS}
    j = q("select count(phone) as p, count(name) as n, count(*) as all_ from population_base")
    assert j["rows"] == [[0, 0, len(rows)]]
    # a narrow filter that singles out one person: suppressed, not answered
    p = rows[3]
    j = q(f"select count(*) from population_base where birth_date = '{p['birth_date'][:4]}' "
          f"and division_code = '{p['division_code']}' and gender_code = '{p['gender_code']}'")
    assert j["rows"] == [] or j["rows"][0][0] >= 10
    # row-level forms are refused
    for sql in ("select * from population_base",
                "select distinct ethnicity_code from population_base",
                "select gender_code, sum(case when ethnicity_code = '37' then 1 else 0 end) from population_base group by 1",
                "select gender_code, count(*) filter (where ethnicity_code = '37') from population_base group by 1",
                "select ethnicity_code, count(*) over () from population_base"):
        body = problem(call(svc, "tj-stats", "/v1/query", {"sql": sql, "purpose": "人口统计分析"}), 422)
        assert "aggregate" in body["detail"] or "group" in body["detail"], body
    problem(call(svc, "tj-stats", "/v1/resources/population_base/lookup",
                 {"purpose": "人口统计分析", "key": p["id_number"]}), 403)
    problem(call(svc, "tj-stats", "/v1/verify", {"resource": "population_base", "purpose": "人口统计分析",
                                                 "claims": [{"id_number": p["id_number"], "name": p["name"]}]}), 403)


def test_secret_guessing_is_limited(svc):
    """Wrong secrets for a client: after a few, 429 with Retry-After, even for the right secret
    from the same address until the wait is over."""
    bad = {"grant_type": "client_credentials", "client_id": "mz-approver", "client_secret": "guess"}
    codes = [httpx.post(svc["url"] + "/v1/oauth/token", data=bad).status_code for _ in range(8)]
    assert codes[:5] == [401] * 5 and 429 in codes[5:]
    r = httpx.post(svc["url"] + "/v1/oauth/token", data={**bad, "client_secret": svc["creds"]["mz-approver"]})
    assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1
    time.sleep(float(r.headers["Retry-After"]) + 0.1)
    r = httpx.post(svc["url"] + "/v1/oauth/token", data={**bad, "client_secret": svc["creds"]["mz-approver"]})
    assert r.status_code == 200


def test_callers_environment_and_request_cannot_widen_access(svc, tmp_path):
    """An L1 analyst's own grants file, key and lake in its environment change nothing: the
    service holds those; request fields naming them are refused."""
    own = tmp_path / "grants.yml"
    own.write_text("roles:\n  stats_public:\n    clearance: L4\n    purposes: [人口统计分析]\n"
                   "    expires: 2099-12-31\n    products: [population_base]\n", encoding="utf-8")
    env = {"GOVLAKE_GRANTS_FILE": str(own), "GOVLAKE_TOKEN_KEY": "00" * 32,
           "GOVLAKE_LAKE_ROOT": str(tmp_path / "mylake")}
    p = subprocess.run([GOVLAKE, "query", "--purpose", "人口统计分析", "--format", "csv",
                        "select id_number from population_base limit 3"],
                       env={**os.environ, **env, "GOVLAKE_CLIENT_ID": "tj-analyst",
                            "GOVLAKE_CLIENT_SECRET": svc["creds"]["tj-analyst"], "GOVLAKE_SERVICE_URL": svc["url"]},
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    clear = {r["id_number"] for r in svc["rows"]}
    assert not set(p.stdout.split()[1:]) & clear  # still masked
    for extra in ({"grants_file": str(own)}, {"role": "ga_analyst"}, {"lake": "/tmp"}, {"memory_limit": "64GB"}):
        problem(call(svc, "tj-analyst", "/v1/query", {"sql": "select 1", "purpose": "人口统计分析", **extra}), 422)


def test_memory_stays_bounded(svc):
    """A query that would need gigabytes fails inside the server's memory limit; the server
    stays small and keeps answering."""
    import psutil

    proc = psutil.Process(svc["server"].proc.pid)
    r = call(svc, "ga-app", "/v1/query", {
        "sql": "select string_agg(repeat('x', 1000), ',') from range(5000000)", "purpose": "人口信息核查"})
    assert r.status_code in (200, 422)
    if r.status_code == 200:  # streamed: an error after the header ends the stream early
        assert len(r.content) < 600_000_000
    else:
        assert "memory" in r.text.lower() or "timed out" in r.text
    assert proc.memory_info().rss < 1_500_000_000, proc.memory_info().rss
    assert call(svc, "ga-app", "/v1/whoami").status_code == 200


def test_chunked_body_over_the_limit_is_refused(svc):
    """A body sent without a length (chunked) is counted as it arrives: 413 past the limit."""
    def chunks():
        yield b'{"resource":"population_base","purpose":"x","claims":['
        for _ in range(400):
            yield b'{"id_number":"' + b"1" * 900 + b'"},'
        yield b'{}]}'

    r = httpx.post(svc["url"] + "/v1/verify", content=chunks(), timeout=30,
                   headers={"Authorization": f"Bearer {token(svc, 'ga-app')}", "Content-Type": "application/json"})
    problem(r, 413)
