"""The operations dashboard (运行看板): ``<lake>/catalog/dashboard.html``, a second page of the
offline catalog site (linked both ways with ``index.html``).

Everything on it comes from :func:`govlake.ops.compute` (the same figures as ``govlake
status`` and the ``department_connectivity`` product): the 互联互通率, per-department state
(on time / late / failing / never delivered) with last delivery and last publish, per-feed
freshness, the latest failed gate, the landing anomalies extraction refused (``govlake.landing``),
and a chart of quarantined rows per feed over the last transform runs. The chart is hand-made inline SVG (no JavaScript, no external resource), so
the page works offline and prints.
"""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, select_autoescape

from govlake import ops
from govlake.storage import Lake, atomic_write_text

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"
PAGE = "dashboard.html"
CHART_RUNS = 20  # transform runs shown in the quarantine chart
STATE_EN = {"on_time": "on time", "late": "late", "failing": "failing", "never_delivered": "never delivered"}
PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
           "#7f7f7f", "#bcbd22")
CYCLE_CN = {"hourly": "每小时", "daily": "每日", "weekly": "每周", "monthly": "每月"}
ANOMALY_CN = {"landing.symlink": "符号链接（拒绝读取）", "landing.undeclared_department": "未登记部门",
              "landing.undeclared_dataset": "未登记数据项", "landing.not_a_date": "目录名不是日期",
              "landing.future_date": "未来日期", "landing.misplaced_file": "文件位置错误"}


def _fmt(d: dt.datetime | None) -> str:
    return d.astimezone(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC") if d else "—"


def _nice_max(v: float) -> int:
    """Smallest 1/2/5 × 10^k at or above ``v`` (at least 1): the chart's y-axis top."""
    if v <= 0:
        return 1
    k = 10 ** math.floor(math.log10(v))
    for m in (1, 2, 5, 10):
        if m * k >= v:
            return int(m * k) if m * k >= 1 else 1
    return int(10 * k)  # pragma: no cover


def quarantine_chart(feeds: list[ops.FeedStatus], width: int = 960, height: int = 340) -> dict | None:
    """Geometry of the quarantined-rows-per-feed line chart (one series per feed over the runs),
    or None when no transform run has written a quarantine file yet."""
    runs = []
    for f in feeds:
        if f.quarantine_trend:
            runs = [(t["run_id"], t["run_at"]) for t in f.quarantine_trend]
            break
    if not runs:
        return None
    left, right, top, bottom = 64, 250, 24, 70
    pw, ph = width - left - right, height - top - bottom
    peak = max((t["rows"] for f in feeds for t in f.quarantine_trend), default=0)
    ymax = _nice_max(peak)
    n = len(runs)

    def x(i: int) -> float:
        return round(left + (pw / 2 if n == 1 else pw * i / (n - 1)), 1)

    def y(v: float) -> float:
        return round(top + ph - ph * v / ymax, 1)

    step = next(s for s in (1, 2, 5, 10, 20, 25, 50) + tuple(10 ** k * m for k in range(2, 12) for m in (1, 2, 5))
                if ymax % s == 0 and ymax // s <= 5)  # integer ticks: rows are counts
    ticks = [{"value": str(v), "y": y(v)} for v in range(0, ymax + 1, step)]
    xlabels = []
    for i, (run_id, run_at) in enumerate(runs):
        at = ops.parse_ts(run_at)
        xlabels.append({"x": x(i), "date": at.strftime("%m-%d") if at else "", "time": at.strftime("%H:%M") if at else "",
                        "run_id": run_id})
    series = []
    for k, f in enumerate(feeds):
        pts = [{"x": x(i), "y": y(t["rows"]), "rows": t["rows"], "run_id": t["run_id"]}
               for i, t in enumerate(f.quarantine_trend)]
        series.append({
            "feed": f.id, "label": f"{f.department} · {f.title}", "colour": PALETTE[k % len(PALETTE)],
            "points": pts, "path": " ".join(f"{p['x']},{p['y']}" for p in pts),
            "latest": pts[-1]["rows"] if pts else 0, "legend_y": top + 8 + 22 * k,
        })
    return {"width": width, "height": height, "left": left, "top": top, "right_edge": left + pw,
            "bottom_edge": top + ph, "plot_width": pw, "plot_height": ph, "ymax": ymax, "ticks": ticks,
            "xlabels": xlabels, "series": series, "legend_x": left + pw + 24, "runs": len(runs)}


def collect(lake: Lake, now: dt.datetime | str | None = None, **compute_kwargs) -> dict:
    """Everything the page shows, as a dict (computed by ``ops.compute``)."""
    compute_kwargs.setdefault("quarantine_runs_n", CHART_RUNS)
    c = ops.compute(lake, now, **compute_kwargs)
    depts = []
    for d in c.departments:
        pub = d.last_publish
        depts.append({
            "dept": d.dept, "department": d.department, "state": d.state,
            "state_label": ops.STATE_LABELS[d.state], "state_en": STATE_EN[d.state], "on_time": d.on_time,
            "last_delivery_date": d.last_delivery_date, "last_ingested_at": _fmt(d.last_ingested_at),
            "last_publish": (f"{pub[0]} v{pub[1]}" if pub else None), "last_published_at": _fmt(pub[2]) if pub else "—",
            "feeds": [{"id": f.id, "title": f.title, "state": f.state, "state_label": f.state_label,
                       "reason": f.reason} for f in d.feeds],
        })
    feeds = []
    for f in c.feeds:
        age = f.hours_since_delivery
        feeds.append({
            "id": f.id, "department": f.department, "dataset": f.dataset, "title": f.title,
            "cycle": CYCLE_CN.get(f.update_cycle, f.update_cycle), "late_after_hours": f.late_after_hours,
            "state": f.state, "state_label": f.state_label, "state_en": STATE_EN[f.state], "reason": f.reason,
            "last_delivery_date": f.last_delivery_date, "last_ingested_at": _fmt(f.last_ingested_at),
            "hours_since_delivery": age,
            "freshness_pct": (min(100, round(100 * age / f.late_after_hours)) if age is not None and
                              f.late_after_hours else None),
            "last_publish": (f"{f.last_publish_product} v{f.last_publish_version}"
                             if f.last_publish_product else None),
            "last_published_at": _fmt(f.last_published_at),
            "quarantined_rows": f.quarantined_rows, "quarantined_by_rule": f.quarantined_by_rule,
            "quarantine_rate": f.quarantine_rate, "gate_pass_rate": f.gate_pass_rate, "gate_runs": f.gate_runs,
        })
    counts = {s: sum(1 for d in c.departments if d.state == s) for s in ops.STATES}
    g = c.last_failed_gate
    return {
        "now": _fmt(c.now),
        "generated_at": _fmt(dt.datetime.now(dt.timezone.utc)),
        "rate": c.rate,
        "rate_text": f"{c.rate:.1%}",
        "on_time_departments": c.on_time_departments,
        "registered_departments": c.registered_departments,
        "healthy": c.healthy,
        "state_counts": [{"state": s, "label": ops.STATE_LABELS[s], "en": STATE_EN[s], "n": counts[s]}
                         for s in ops.STATES],
        "departments": depts,
        "feeds": feeds,
        "failing_gates": [{"layer": x.layer, "model": x.model, "run_id": x.run_id, "reason": x.reason,
                           "at": _fmt(x.at)} for x in c.failing_gates],
        "last_failed_gate": ({"layer": g.layer, "model": g.model, "run_id": g.run_id, "reason": g.reason,
                              "at": _fmt(g.at),
                              "open": any((f.layer, f.model) == (g.layer, g.model) for f in c.failing_gates)}
                             if g else None),
        "chart": quarantine_chart(c.feeds),
        "landing_anomalies": [{"path": f"landing/{a.path}", "kind": a.kind, "label": ANOMALY_CN.get(a.kind, a.kind),
                               "feed": a.feed, "message": a.message, "link_target": a.link_target,
                               "quarantine_dir": a.quarantine_dir, "first_seen_at": _fmt(ops.parse_ts(a.first_seen_at)),
                               "last_seen_at": _fmt(ops.parse_ts(a.last_seen_at))}
                              for a in c.landing_anomalies],
    }


def render_html(data: dict) -> str:
    env = Environment(loader=FileSystemLoader(str(TEMPLATES)), autoescape=select_autoescape(["html"]),
                      trim_blocks=True, lstrip_blocks=True)
    return env.get_template(PAGE).render(d=data)


def build(lake: Lake | None = None, now: dt.datetime | str | None = None, **compute_kwargs) -> Path:
    """Write ``<lake>/catalog/dashboard.html`` (atomically) as of ``now`` (default: ``ops.now()``,
    the wall clock); returns its path. ``compute_kwargs`` go to ``ops.compute`` (``datasets``,
    ``quarantine_runs_n``, …)."""
    lake = lake or Lake.default()
    data = collect(lake, now, **compute_kwargs)
    out = lake.dashboard_page
    atomic_write_text(out, render_html(data))
    return out
