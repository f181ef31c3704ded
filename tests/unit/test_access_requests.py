"""The conditional-sharing workflow (有条件共享): request → approve/reject → query, revoke,
expiry, 不予共享 refusal, 无条件共享 auto-grant, owning-department approvers, audit chain."""

from __future__ import annotations

import datetime as dt
import json
import sqlite3

import pytest

import access_support as S
from govlake import access_requests as ar
from govlake import audit, cli, query
from govlake.storage import Lake

OPEN_PRODUCT_YAML = """\
  - name: open_statistics
    description: 公开人口统计
    config:
      meta:
        product: true
        title: 分区划人口统计
        code: GOV-TJ-0003
        owner_department: 统计
        owner: 省统计局
        sharing_type: 无条件共享
        update_cycle: monthly
        summary: 按行政区划汇总的户籍人口数
    columns:
      - name: division_code
        config: {meta: {grade: L1, element: division_code}}
      - name: population
        config: {meta: {grade: L1, element: count}}
"""

APPROVERS_YAML = """\
departments:
  公安: [王建国]
  民政: [李秀英, 周民政]
  统计: [周平]
"""

# stats_public (统计, clearance L1) has population_base for 人口统计分析 in the grants file;
# it asks the 民政-owned marriage_household_check for a new purpose.
ROLE, PRODUCT, PURPOSE = "stats_public", "marriage_household_check", "婚姻状况统计"
SQL = "select name, household_status_code from marriage_household_check order by certificate_number"


@pytest.fixture
def env(lake: Lake, tmp_path, monkeypatch):
    monkeypatch.setenv("GOVLAKE_TOKEN_KEY", "5a" * 32)
    dbt = S.write_dbt_dir(tmp_path, S.SHARED_MODELS_YAML + OPEN_PRODUCT_YAML)
    grants = S.write_grants(tmp_path)
    approvers = tmp_path / "approvers.yml"
    approvers.write_text(APPROVERS_YAML, encoding="utf-8")
    monkeypatch.setenv("GOVLAKE_GRANTS_FILE", str(grants))
    monkeypatch.setenv("GOVLAKE_APPROVERS_FILE", str(approvers))
    monkeypatch.setenv("GOVLAKE_PROJECT_ROOT", str(tmp_path))
    rows = S.people(30)
    S.publish(lake, "population_base", rows)
    marriage = [{"id_number": r["id_number"], "name": r["name"], "household_status_code": "20",
                 "certificate_number": f"J{i:08d}"} for i, r in enumerate(rows[:12])]
    S.publish(lake, "marriage_household_check", marriage)
    S.publish(lake, "secret_registry", [{"id_number": rows[0]["id_number"]}])
    S.publish(lake, "open_statistics", [{"division_code": "110105", "population": 1200},
                                        {"division_code": "330106", "population": 800}])
    return {"lake": lake, "dbt": dbt, "grants": grants, "rows": rows, "marriage": marriage}


def q(env, sql=SQL, role=ROLE, purpose=PURPOSE, **kw):
    return query.run_query(role, purpose, sql, lake=env["lake"], grants_path=env["grants"],
                           dbt_dir=env["dbt"], **kw)


def actions(lake):
    return [(e["kind"], e["payload"].get("action") or e["payload"].get("status") or e["kind"])
            for e in audit.entries(lake)]


def test_request_approve_query_then_revoke(env):
    lake = env["lake"]
    with pytest.raises(query.QueryRefused):  # nothing granted yet
        q(env)
    req = ar.request(lake, ROLE, PRODUCT, PURPOSE, requester="统计局 张三")
    assert (req.status, req.owner_department, req.sharing_type) == ("pending", "民政", "有条件共享")
    assert [r.ref for r in ar.list_requests(lake, status="pending", department="民政")] == [req.ref]
    assert ar.list_requests(lake, status="pending", department="公安") == []
    with pytest.raises(query.QueryRefused) as pending:  # pending is not granted
        q(env)
    assert "purpose" in pending.value.what

    g = ar.approve(lake, req.ref, "李秀英", "民政", days=90, reason="统计用途，符合共享条件")
    assert g.expires == dt.date.today() + dt.timedelta(days=90) and g.purpose == PURPOSE
    assert ar.get_request(lake, req.id).status == "approved"
    assert ar.get_request(lake, req.id).grant_id == g.id

    res = q(env)
    assert res.row_count == len(env["marriage"]) and res.grants == {PRODUCT: g.ref}
    # the approval gives the product, not clearance: L3 names stay masked for an L1 role
    clear_names = {r["name"] for r in env["marriage"]}
    got = res.table.column("name").to_pylist()
    assert got and not (set(got) & clear_names), got
    assert res.treatments[PRODUCT]["name"] == "mask"
    # the role's own grants still work with its own purpose, and the approved product
    # is not reachable with another purpose
    assert q(env, "select count(*) from population_base", purpose="人口统计分析").row_count == 1
    with pytest.raises(query.QueryRefused) as other:
        q(env, "select count(*) from marriage_household_check", purpose="人口统计分析")
    assert PURPOSE in other.value.why

    ar.revoke(lake, g.ref, "李秀英", "民政", reason="统计任务结束")
    with pytest.raises(query.QueryRefused) as revoked:
        q(env)
    assert "revoked" in revoked.value.why and "统计任务结束" in revoked.value.why
    assert ar.get_grant(lake, g.id).state() == "revoked"
    with pytest.raises(ar.InvalidState):
        ar.revoke(lake, g.ref, "李秀英", "民政", reason="again")

    ok = audit.verify(lake)
    assert ok.ok, str(ok)
    steps = actions(lake)
    for step in [("access_request", "requested"), ("grant_change", "approved"), ("query", "ok"),
                 ("grant_change", "revoked"), ("query_refused", "query_refused"),
                 ("grant_change", "revoke_refused")]:
        assert step in steps, (step, steps)
    order = [s for s in steps if s[1] in ("requested", "approved", "ok", "revoked")]
    assert [s[1] for s in order] == ["requested", "approved", "ok", "ok", "revoked"]
    entries = audit.entries(lake)
    used = [e for e in entries if e["kind"] == "query" and e["payload"].get("access_grants")]
    assert used and used[0]["payload"]["access_grants"] == {PRODUCT: g.ref}
    approved = next(e for e in entries if e["payload"].get("action") == "approved")["payload"]
    assert approved["purpose"] == PURPOSE and approved["expires"] == g.expires.isoformat()
    assert approved["approver"] == "李秀英" and approved["requester"] == "统计局 张三"


def test_request_reject_query_refused(env):
    lake = env["lake"]
    req = ar.request(lake, ROLE, PRODUCT, PURPOSE, requester="张三")
    r = ar.reject(lake, req.id, "李秀英", "民政", reason="用途与共享条件（仅用于婚姻登记核验）不符")
    assert r.status == "rejected" and r.decision_reason.startswith("用途") and r.grant_id is None
    with pytest.raises(query.QueryRefused):
        q(env)
    with pytest.raises(ar.InvalidState):  # a decided request stays decided
        ar.approve(lake, req.id, "李秀英", "民政", reason="changed my mind")
    assert ar.list_grants(lake) == []
    assert audit.verify(lake).ok
    assert ("access_request", "rejected") in actions(lake)


def test_expiry_ends_access(env):
    lake = env["lake"]
    t0 = dt.datetime(2026, 11, 20, 9, 0, tzinfo=dt.timezone.utc)
    req = ar.request(lake, ROLE, PRODUCT, PURPOSE, requester="张三", now=t0)
    g = ar.approve(lake, req.id, "李秀英", "民政", days=3, reason="短期核查", now=t0)
    assert g.expires == dt.date(2026, 11, 23)
    assert q(env, today=dt.date(2026, 11, 23)).row_count == len(env["marriage"])  # last valid day
    with pytest.raises(query.QueryRefused) as exc:
        q(env, today=dt.date(2026, 11, 24))
    assert "expired on 2026-11-23" in exc.value.why
    assert g.state(dt.date(2026, 11, 24)) == "expired"
    with pytest.raises(ar.AccessRequestError):  # longer than the maximum
        ar.approve(lake, ar.request(lake, ROLE, PRODUCT, "另一用途", requester="张三").id,
                   "李秀英", "民政", days=ar.MAX_DAYS + 1, reason="x")
    assert audit.verify(lake).ok


def test_not_shared_product_cannot_be_requested(env):
    lake = env["lake"]
    with pytest.raises(ar.NotShareable) as exc:
        ar.request(lake, ROLE, "secret_registry", "人口统计分析", requester="张三")
    assert "不予共享" in str(exc.value) and "《中华人民共和国保守国家秘密法》" in str(exc.value)
    assert ar.list_requests(lake) == []
    last = audit.entries(lake)[-1]
    assert last["payload"]["action"] == "request_refused" and last["payload"]["product"] == "secret_registry"
    assert audit.verify(lake).ok


def test_unconditional_product_needs_no_approval(env):
    lake = env["lake"]
    role, purpose = "mz_analyst", "社会救助统计"
    with pytest.raises(query.QueryRefused):
        q(env, "select sum(population) from open_statistics", role=role, purpose=purpose)
    req = ar.request(lake, role, "open_statistics", purpose, requester="民政 李四")
    assert req.status == "auto_granted" and req.grant_id is not None
    assert ar.list_requests(lake, status="pending") == []
    g = ar.get_grant(lake, req.grant_id)
    assert g.kind == "unconditional" and g.state() == "active"
    assert g.expires == dt.date.today() + dt.timedelta(days=ar.UNCONDITIONAL_DAYS)
    res = q(env, "select sum(population) as n from open_statistics", role=role, purpose=purpose)
    assert res.table.column("n").to_pylist() == [2000]
    assert ("access_request", "auto_granted") in actions(lake) and audit.verify(lake).ok


def test_only_the_owning_department_may_decide(env):
    lake = env["lake"]
    req = ar.request(lake, ROLE, PRODUCT, PURPOSE, requester="周民政")
    with pytest.raises(ar.NotAuthorized) as wrong_dept:  # 公安's approver, 民政's product
        ar.approve(lake, req.id, "王建国", "公安", reason="x")
    assert "owning department 民政" in str(wrong_dept.value)
    with pytest.raises(ar.NotAuthorized) as unregistered:  # claims 民政 but is not registered there
        ar.approve(lake, req.id, "王建国", "民政", reason="x")
    assert "not a registered approver of 民政" in str(unregistered.value)
    with pytest.raises(ar.NotAuthorized) as own:  # registered, but filed the request
        ar.approve(lake, req.id, "周民政", "民政", reason="x")
    assert "may not decide" in str(own.value)
    with pytest.raises(ar.NotAuthorized):
        ar.reject(lake, req.id, "周平", "统计", reason="x")
    assert ar.get_request(lake, req.id).status == "pending"
    g = ar.approve(lake, req.id, "李秀英", "民政", reason="ok")
    with pytest.raises(ar.NotAuthorized):  # revoking is the owner's call too
        ar.revoke(lake, g.id, "王建国", "公安", reason="x")
    assert ar.get_grant(lake, g.id).state() == "active"
    refused = [a for a in actions(lake) if a[1].endswith("_refused")]
    assert len(refused) == 5 and audit.verify(lake).ok


def test_column_limited_grant(env):
    lake = env["lake"]
    req = ar.request(lake, ROLE, PRODUCT, PURPOSE, columns="household_status_code,certificate_number",
                     requester="张三")
    assert req.columns == ("household_status_code", "certificate_number")
    ar.approve(lake, req.id, "李秀英", "民政", reason="只需状态")
    res = q(env, "select * from marriage_household_check")
    assert res.columns == ["household_status_code", "certificate_number"]
    with pytest.raises(query.QueryRefused) as exc:
        q(env, "select name from marriage_household_check")
    assert "name" in exc.value.what and "household_status_code" in exc.value.why
    with pytest.raises(ar.AccessRequestError) as bad:
        ar.request(lake, ROLE, PRODUCT, "x", columns=["no_such_column"], requester="张三")
    assert "no_such_column" in str(bad.value)


def test_input_errors_name_the_problem(env):
    lake = env["lake"]
    with pytest.raises(ar.AccessRequestError, match="not in the grants file"):
        ar.request(lake, "nobody", PRODUCT, PURPOSE)
    with pytest.raises(ar.AccessRequestError, match="no such product"):
        ar.request(lake, ROLE, "nope", PURPOSE)
    with pytest.raises(ar.AccessRequestError, match="expired"):
        ar.request(lake, "expired_role", PRODUCT, PURPOSE)
    with pytest.raises(ar.AccessRequestError, match="purpose is required"):
        ar.request(lake, ROLE, PRODUCT, "  ")
    ar.request(lake, ROLE, PRODUCT, PURPOSE, requester="张三")
    with pytest.raises(ar.InvalidState, match="already pending"):
        ar.request(lake, ROLE, PRODUCT, PURPOSE, requester="张三")
    with pytest.raises(ar.NotFound):
        ar.approve(lake, "R-99", "李秀英", "民政", reason="x")
    with pytest.raises(ar.AccessRequestError, match="reason"):
        ar.approve(lake, "R-1", "李秀英", "民政", reason="")
    assert audit.verify(lake).ok


def test_state_is_durable_in_sqlite(env):
    lake = env["lake"]
    req = ar.request(lake, ROLE, PRODUCT, PURPOSE, requester="张三")
    ar.approve(lake, req.id, "李秀英", "民政", reason="ok")
    con = sqlite3.connect(lake.access_db)
    try:
        assert con.execute("select status, decided_by from requests").fetchall() == [("approved", "李秀英")]
        assert con.execute("select role, product, purpose from grants").fetchall() == [(ROLE, PRODUCT, PURPOSE)]
    finally:
        con.close()


# the CLI session (request, approve, query, revoke) runs against a real service:
# tests/integration/test_sharing_service.py::test_cli_access_session


def test_concurrent_decisions_one_wins(env):
    """Two approvers deciding the same request at once: exactly one decision lands."""
    import threading

    lake = env["lake"]
    req = ar.request(lake, ROLE, PRODUCT, PURPOSE, requester="张三")
    results, barrier = [], threading.Barrier(2)

    def decide(fn, who):
        barrier.wait()
        try:
            fn(lake, req.id, who, "民政", reason=f"{who} decides")
            results.append(("ok", fn.__name__))
        except ar.InvalidState:
            results.append(("late", fn.__name__))

    ts = [threading.Thread(target=decide, args=(ar.approve, "李秀英")),
          threading.Thread(target=decide, args=(ar.reject, "周民政"))]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert sorted(r[0] for r in results) == ["late", "ok"], results
    winner = next(r[1] for r in results if r[0] == "ok")
    final = ar.get_request(lake, req.id)
    assert final.status == {"approve": "approved", "reject": "rejected"}[winner]
    assert len(ar.list_grants(lake)) == (1 if winner == "approve" else 0)
    assert audit.verify(lake).ok
