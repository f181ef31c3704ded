"""The service's own configuration: ``config/service.yml`` plus the server's command line.

Everything that widens or bounds access (limits, paths of the lake, the grants, the keys, the
client registry) is read here, in the server's process, at start-up. A request can ask for a
smaller limit, never a larger one, and names no path.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from govlake import config
from govlake.storage import Lake


class SettingsError(ValueError):
    """The service configuration is invalid; the message names the file and key."""


@dataclass(frozen=True)
class RateLimit:
    per_second: float
    burst: int


@dataclass(frozen=True)
class Settings:
    lake: Lake
    host: str = "127.0.0.1"
    port: int = 8765
    token_ttl: int = 900
    max_body_bytes: int = 1 << 20
    max_claims: int = 1000
    rate_limits: dict[str, RateLimit] = field(default_factory=lambda: {"default": RateLimit(200, 400)})
    query_timeout: float = 30.0
    query_memory: str = "512MB"
    query_threads: int = 2
    max_concurrent_queries: int = 4
    default_row_limit: int = 1000
    grants_path: Path | None = None
    source: str = ""

    @property
    def state_dir(self) -> Path:
        """The service's private state (client registry): 0700."""
        return self.lake.service_root

    @property
    def registry_path(self) -> Path:
        return self.state_dir / "clients.sqlite"

    @property
    def jwt_key_path(self) -> Path:
        return config.work_dir() / "secrets" / "service-jwt.key"

    def rate_limit(self, kind: str) -> RateLimit:
        return self.rate_limits.get(kind) or self.rate_limits["default"]


def settings_file() -> Path:
    return config.project_root() / "config" / "service.yml"


def _num(doc: dict, path: str, default, kind=float, where: str = ""):
    cur = doc
    for part in path.split("."):
        if not isinstance(cur, dict) or part not in cur:
            return default
        cur = cur[part]
    try:
        v = kind(cur)
    except (TypeError, ValueError) as exc:
        raise SettingsError(f"{where}: {path} = {cur!r} is not a {kind.__name__}") from exc
    if isinstance(v, (int, float)) and not (0 < v < 1e12):
        raise SettingsError(f"{where}: {path} = {cur!r} must be positive and finite")
    return v


def load(path: Path | None = None, *, lake: Lake | None = None, host: str | None = None,
         port: int | None = None, allow_remote: bool = False) -> Settings:
    p = Path(path) if path else settings_file()
    doc = {}
    if p.is_file():
        doc = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    where = str(p)
    limits = {}
    for kind, spec in ((doc.get("rate_limits") or {}) | {}).items():
        if not isinstance(spec, dict):
            raise SettingsError(f"{where}: rate_limits.{kind} must be a mapping")
        limits[str(kind)] = RateLimit(_num(spec, "per_second", 100.0, float, where),
                                      _num(spec, "burst", 200, int, where))
    limits.setdefault("default", RateLimit(200.0, 400))
    s = Settings(
        lake=lake or Lake.default(),
        host=host or str((doc.get("listen") or {}).get("host") or "127.0.0.1"),
        port=int(port if port is not None else _num(doc, "listen.port", 8765, int, where)),
        token_ttl=_num(doc, "tokens.ttl_seconds", 900, int, where),
        max_body_bytes=_num(doc, "requests.max_body_bytes", 1 << 20, int, where),
        max_claims=_num(doc, "requests.max_claims", 1000, int, where),
        rate_limits=limits,
        query_timeout=_num(doc, "query.timeout_seconds", 30.0, float, where),
        query_memory=str((doc.get("query") or {}).get("memory_limit") or "512MB"),
        query_threads=_num(doc, "query.threads", 2, int, where),
        max_concurrent_queries=_num(doc, "query.max_concurrent", 4, int, where),
        default_row_limit=_num(doc, "query.default_row_limit", 1000, int, where),
        source=where,
    )
    try:
        loopback = ipaddress.ip_address(s.host).is_loopback
    except ValueError:
        loopback = s.host == "localhost"
    if not loopback and not allow_remote:
        raise SettingsError(f"{where}: listen.host {s.host} is not a loopback address; the service "
                            "listens on loopback unless started with --allow-remote behind a TLS proxy")
    return s
