"""``govlake serve``: the sharing service (HTTP, FastAPI on uvicorn), loopback by default."""

from __future__ import annotations

import argparse
import sys


def register(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("serve", help="run the sharing service (the only way to read shared data)",
                       description="Start the sharing service on loopback (config/service.yml: host, port, "
                                   "limits). It holds the lake, the grants and the keys; clients authenticate "
                                   "with OAuth2 client credentials (govlake clients add).")
    s.add_argument("--host", default=None, help="listen address (default: config/service.yml, 127.0.0.1)")
    s.add_argument("--port", type=int, default=None, help="port (default: config/service.yml, 8765; 0 = any free)")
    s.add_argument("--config", default=None, help="service settings file (default: config/service.yml)")
    s.add_argument("--allow-remote", action="store_true",
                   help="allow a non-loopback listen address (only behind a TLS-terminating proxy)")
    s.add_argument("--workers", type=int, default=1, help="uvicorn worker processes (default 1)")
    s.set_defaults(func=_serve)

    o = sub.add_parser("openapi", help="print the service's OpenAPI document (or --check it against docs/openapi.json)")
    o.add_argument("--check", action="store_true", help="exit 1 when docs/openapi.json differs from the implementation")
    o.add_argument("--write", action="store_true", help="write docs/openapi.json")
    o.set_defaults(func=_openapi)


def _serve(args) -> int:
    from govlake.sharing.service import server
    from govlake.sharing.service.settings import SettingsError, load

    try:
        settings = load(args.config, host=args.host, port=args.port, allow_remote=args.allow_remote)
    except SettingsError as exc:
        print(f"govlake serve: {exc}", file=sys.stderr)
        return 2
    return server.serve(settings, workers=args.workers)


def _openapi(args) -> int:
    import json

    from govlake.sharing.service import app as service_app
    from govlake.sharing.service.settings import load

    doc = service_app.openapi_document(load())
    text = json.dumps(doc, ensure_ascii=False, indent=2, sort_keys=True) + "\n"
    path = service_app.committed_openapi_path()
    if args.write:
        path.write_text(text, encoding="utf-8")
        print(f"wrote {path}")
        return 0
    if args.check:
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            print(f"{path} is out of date with the service: run `govlake openapi --write`", file=sys.stderr)
            return 1
        print(f"{path} matches the implementation")
        return 0
    sys.stdout.write(text)
    return 0
