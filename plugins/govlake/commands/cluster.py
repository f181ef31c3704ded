"""``govlake cluster up|down|status``: the docker-compose deployment as local processes
(Postgres, Redis, Airflow api-server/scheduler/dag-processor/triggerer, two Celery workers).
Logic: plugins/govlake/ops/cluster.py; see docs/deployment.md."""

from __future__ import annotations

import argparse
import json


def register(sub: argparse._SubParsersAction) -> None:
    c = sub.add_parser("cluster", help="run the CeleryExecutor deployment locally (postgres, redis, airflow)",
                       description="Start/stop/inspect a loopback-only multi-process Airflow cluster with the "
                                   "settings of docker-compose.yml, state under .work/cluster/.")
    csub = c.add_subparsers(dest="cluster_command", metavar="ACTION", required=True)
    for name, hlp in [("up", "start every process (idempotent)"), ("down", "stop every process it started"),
                      ("status", "each process alive/dead"), ("env", "print the Airflow environment as exports")]:
        p = csub.add_parser(name, help=hlp)
        p.add_argument("--state-dir", default=None, help="state folder (default .work/cluster)")
        if name == "up":
            for port in ("postgres", "redis", "api"):
                p.add_argument(f"--{port}-port", type=int, default=None,
                               help=f"{port} port (default: GOVLAKE_CLUSTER_{port.upper()}_PORT or a free one)")
        if name == "status":
            p.add_argument("--json", action="store_true")
        p.set_defaults(func=_cmd)


def _cmd(args) -> int:
    import shlex

    from govlake.ops import cluster

    action = args.cluster_command
    try:
        if action == "up":
            cluster.up(args.state_dir, postgres=args.postgres_port, redis=args.redis_port, api=args.api_port)
            return 0
        if action == "down":
            left = cluster.down(args.state_dir)
            if left:
                print("still alive: " + ", ".join(left))
                return 1
            print("cluster down")
            return 0
        if action == "env":
            c = cluster.Cluster.at(args.state_dir)
            if not c.ports:
                print(f"no cluster state in {c.state_dir} (run govlake cluster up)")
                return 1
            for k, v in c.env().items():
                print(f"export {k}={shlex.quote(v)}")
            return 0
        st = cluster.status(args.state_dir)
        if args.json:
            print(json.dumps(st, indent=1))
        else:
            for name, s in st.items():
                print(f"{name:14} {'alive' if s['alive'] else 'dead ':5}  pid {s['pid'] or '-':<8} {s['log']}")
        return 0 if all(s["alive"] for s in st.values()) else 1
    except cluster.ClusterError as exc:
        print(f"govlake cluster {action}: {exc}")
        return 2
