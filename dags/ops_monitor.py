"""ops_monitor: hourly operations checks (wiring only; logic in plugins/govlake/ops/ and alerts.py)."""

from __future__ import annotations

import datetime as dt

from airflow.sdk import DAG, task

from govlake import alerts, ops
from govlake.dag_factory import START

OWNER = "govlake data platform"

DOC = """
# Operations monitor (运维监控)

Owner: **govlake data platform**. Runs hourly; reads only the lake (delivery ledger, row
quarantine, gate history, published manifests) and the dataset metadata. Freshness is measured
against the wall clock at the time the run executes (not the run's logical date), so this
product, `govlake status`, the dashboard and the alerts agree; the three tasks of a run share
the instant `build_connectivity` took.

* **build_connectivity** — computes `department_connectivity`: one row per registered department
  × dataset with the last delivery, whether it arrived within its update cycle
  (`on_time` / `late` / `failing` / `never_delivered`), the last publish of products built from it,
  rows quarantined by rule over the last runs, the gate pass rate, and the platform
  **互联互通率** (departments whose every feed is on time / registered departments). Writes
  `candidate/<run_id>/department_connectivity.parquet`. Red: the computation itself failed
  (unreadable ledger, quarantine or gate-history file — the log names it), not a late feed.
* **publish_connectivity** — gates the candidate with the reviewed suite
  `expectations/shared/department_connectivity.json` (GX on DuckDB; report under
  `reports/<run_id>/shared/`), records the verdict in `_meta/gate_history.jsonl`, publishes
  `published/department_connectivity/v=<n>` and appends the publication to the audit log.
  Red: the suite failed (the log and the alert name each failed expectation) — the previous
  version stays current.
* **evaluate_alerts** — opens one alert per new problem (late or never-delivered feed, latest
  delivery quarantined, failed gate, quarantine rate over `config/alerts.yml`'s threshold) and
  closes resolved ones; notifiers per `config/alerts.yml` (JSON Lines `_meta/alerts.jsonl` by
  default). Red: a notifier or the registry is broken, so operators may not have been told.

The same picture in a terminal: `govlake status` (exit 1 when anything needs attention).
"""

with DAG(
    dag_id="ops_monitor",
    description="freshness, 互联互通率 (department_connectivity) and alerts",
    schedule="@hourly",
    start_date=START,
    catchup=False,
    max_active_runs=1,
    tags=["layer:ops", "ops"],
    default_args={"owner": OWNER, "retries": 1, "retry_delay": dt.timedelta(minutes=2),
                  "on_failure_callback": alerts.on_task_failure,
                  "on_success_callback": alerts.on_task_success},
    doc_md=DOC,
) as dag:

    @task(task_id="build_connectivity",
          doc_md="Write the department_connectivity candidate (govlake.ops.build_connectivity_task).")
    def build_connectivity(**context):
        summary = ops.build_connectivity_task(ops.Lake.default(), context["run_id"], ops.now_from_context(context))
        context["ti"].xcom_push(key="summary", value=summary)
        return summary

    @task(task_id="evaluate_alerts", trigger_rule="all_done",
          doc_md="Open alerts for new problems and close resolved ones (govlake.alerts.evaluate).")
    def evaluate_alerts(**context):
        built = context["ti"].xcom_pull(task_ids="build_connectivity", key="summary") or {}
        res = alerts.evaluate(ops.Lake.default(), built.get("now") or ops.now_from_context(context))
        summary = {"now": res["now"], "open": res["open"],
                   "opened": [a["key"] for a in res["opened"]], "closed": [a["key"] for a in res["closed"]]}
        context["ti"].xcom_push(key="summary", value=summary)
        return summary

    @task(task_id="publish_connectivity",
          doc_md="Gate, publish and audit department_connectivity (govlake.ops.publish_connectivity_task), "
                 "then rebuild the catalog site (govlake.site.build_site).")
    def publish_connectivity(summary: dict, **context):
        from govlake import site

        lake = ops.Lake.default()
        res = ops.publish_connectivity_task(lake, context["run_id"], summary["candidate"], summary["now"])
        site.build_site(lake)
        context["ti"].xcom_push(key="summary", value=res)
        return res

    built = build_connectivity()
    publish_connectivity(built) >> evaluate_alerts()
