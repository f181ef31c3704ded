"""Runs made by `govlake run` (dag.test) show their real duration in the Airflow UI: the run's
start is the wall-clock start, not its logical date (which made a past day's run last days)."""

from __future__ import annotations

import datetime as dt

import pytest

from govlake import runner

pytestmark = pytest.mark.integration


def test_run_start_and_end_are_wall_clock(airflow_env, lake):
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from sqlalchemy import select

    dags = runner.load_dags()
    logical = runner.logical_datetime((dt.date.today() - dt.timedelta(days=6)).isoformat())
    before = dt.datetime.now(dt.timezone.utc)
    res = runner.run_dag(dags["ops_monitor"], logical)
    after = dt.datetime.now(dt.timezone.utc)
    with create_session() as session:
        dr = session.scalars(select(DagRun).where(DagRun.run_id == res["run_id"])).one()
        assert before <= dr.start_date <= dr.end_date <= after + dt.timedelta(seconds=1), (dr.start_date, dr.end_date)
        assert (dr.end_date - dr.start_date) < dt.timedelta(minutes=5)
        assert dr.logical_date == logical  # the logical date itself is unchanged
