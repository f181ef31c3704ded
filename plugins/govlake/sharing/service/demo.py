"""The sharing part of ``govlake demo``: a local service on a free loopback port, three demo
clients, a verification (核验), a masked query and a statistics query — all over HTTP, so the
demo shows what department systems and analysts really get."""

from __future__ import annotations

import os
from pathlib import Path

from govlake import config
from govlake.sharing.service.client import Credentials, ServiceClient, ServiceError, save_credentials
from govlake.sharing.service.identity import Registry
from govlake.sharing.service.server import LocalServer
from govlake.sharing.service.settings import load

DEMO_CLIENTS = [  # client id, kind, role (config/grants.yml), department, name
    ("demo-ga-app", "app", "ga_population_analyst", "公安", "人口信息核查系统"),
    ("demo-mz-app", "app", "mz_marriage_analyst", "民政", "婚姻登记系统"),
    ("demo-tj-analyst", "analyst", "tj_public_statistics", "统计", "统计分析员"),
]


def credentials_dir() -> Path:
    return config.work_dir() / "demo-credentials"


def register_demo_clients(settings) -> dict[str, str]:
    """Register (or rotate) the demo clients; their credentials go to .work/demo-credentials/ (0600)."""
    reg = Registry(settings.registry_path)
    secrets = {}
    for cid, kind, role, dept, name in DEMO_CLIENTS:
        c = reg.find(cid)
        if c is None or not c.active:
            if c is not None:  # revoked earlier: a demo client is re-registered under a new id
                continue
            _, secret = reg.add(cid, kind=kind, role=role, department=dept, name=name)
        else:
            _, secret = reg.rotate(cid)
        secrets[cid] = secret
    return secrets


def run(console) -> int:
    """Start a local service, show verification and queries through it, stop it."""
    settings = load()
    secrets = register_demo_clients(settings)
    log = config.work_dir() / "logs" / "sharing-service-demo.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with LocalServer(env=dict(os.environ), log=log) as server:
        clients = {cid: ServiceClient(Credentials(cid, s, server.url)) for cid, s in secrets.items()}
        try:
            return _show(console, server, clients)
        except ServiceError as exc:
            console.print(f"[red]sharing service demo failed: {exc}[/red] (log {log})")
            return 1
        finally:
            for c in clients.values():
                c.close()
            for cid, s in secrets.items():
                save_credentials(cid, s, f"http://{settings.host}:{settings.port}",
                                 credentials_dir() / f"{cid}.json")


def _show(console, server, clients) -> int:
    from rich.table import Table

    ga, mz, tj = clients["demo-ga-app"], clients["demo-mz-app"], clients["demo-tj-analyst"]
    console.print(f"\nsharing service (govlake serve) started for the demo on {server.url}")
    sample = ga.query("select id_number, name from population_base where name is not null "
                      "order by id_number limit 2", "人口信息核查").json()["rows"]
    if len(sample) < 2:
        console.print("[red]population_base has fewer than 2 named people[/red]")
        return 1
    (id1, name1), (id2, name2) = sample
    claims = [{"id_number": id1, "name": name1}, {"id_number": id2, "name": name2 + "某"}]
    res = mz.post("/v1/verify", {"resource": "population_base", "purpose": "婚姻登记核验", "claims": claims})
    console.print(f"核验 by demo-mz-app (民政, L3) against population_base v{res['version']}:")
    t = Table()
    for col in ("claim", "name", "answer"):
        t.add_column(col)
    for i, r in enumerate(res["results"]):
        t.add_row(f"#{i + 1}", "true name" if i == 0 else "altered name", r["fields"]["name"])
    console.print(t)
    masked = mz.query("select id_number, name, phone, address from population_base order by name limit 3",
                      "婚姻登记核验").json()
    t = Table(title="the same clerk's query: above-clearance columns come masked or as join tokens")
    for c in masked["columns"]:
        t.add_column(c, overflow="fold")
    for row in masked["rows"]:
        t.add_row(*["" if v is None else str(v)[:24] for v in row])
    console.print(t)
    stats = tj.query("select division_code, count(*) as people from population_base group by 1 "
                     "order by 2 desc limit 3", "人口统计分析").json()
    console.print("statistics (demo-tj-analyst, L1): " + ", ".join(f"{d} {n}" for d, n in stats["rows"]))
    console.print(f"every request above is in the audit log (govlake audit verify); credentials of the demo "
                  f"clients: {credentials_dir()}/")
    return 0
