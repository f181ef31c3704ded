"""The sharing service: an HTTP API (FastAPI) that alone holds the lake, the grants and the keys.

Endpoints (OpenAPI at ``/openapi.json``; committed as ``docs/openapi.json``):

- ``POST /v1/oauth/token`` — OAuth2 client credentials → short-lived bearer token;
- ``GET  /v1/whoami`` — the caller's registration (role, department) as the service sees it;
- ``GET  /v1/catalog`` — resources, versions, grades, sharing types, quality, freshness;
- ``POST /v1/query`` — one SELECT on granted resources, streamed as JSON, CSV, Parquet or Arrow;
- ``POST /v1/resources/{resource}/lookup`` — the record of one key (ID number, USCC, join token);
- ``POST /v1/verify`` — 核验: match / no_match per claimed field, no data value in the answer;
- ``POST /v1/access-requests``, ``…/{id}/approve``, ``…/{id}/reject``, ``/v1/grants/{id}/revoke``.

Every data request is audited before it runs (an intent entry, durable) and after (its outcome:
rows, SHA-256 of the result, duration). The role comes from the client's registration; the
purpose is stated per request and checked against the grants. Errors are problem details
(RFC 9457) with one shape: ``{type, title, status, detail, instance}``.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import json
import math
import os
import threading
import time
import unicodedata
from pathlib import Path
from typing import Annotated, Any, Iterator, Literal

import duckdb
import pyarrow as pa
from fastapi import Depends, FastAPI, Form, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBasic, HTTPBasicCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from govlake import access_requests, audit, masking, products, query
from govlake.sharing import crypto
from govlake.sharing.service import fastpath
from govlake.sharing.service.identity import AuthError, Client, Registry, TokenIssuer, private_file
from govlake.sharing.service.settings import Settings

PROBLEM = "application/problem+json"
API_VERSION = "1.0.0"


# ---- errors ---------------------------------------------------------------------------------
class Problem(Exception):
    """An error answered as RFC 9457 problem details."""

    TITLES = {400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
              409: "Conflict", 413: "Content Too Large", 422: "Unprocessable Content",
              429: "Too Many Requests", 500: "Internal Server Error", 503: "Service Unavailable",
              504: "Gateway Timeout"}

    def __init__(self, status: int, code: str, detail: str, headers: dict | None = None, **extra):
        self.status, self.code, self.detail = status, code, detail
        self.headers = headers or {}
        self.extra = extra
        super().__init__(detail)

    def body(self, instance: str = "") -> dict:
        return {"type": f"https://govlake.invalid/problems/{self.code}", "title": self.TITLES.get(self.status, "Error"),
                "status": self.status, "detail": self.detail, "instance": instance, **self.extra}

    def response(self, instance: str = "") -> JSONResponse:
        headers = dict(self.headers)
        if self.status == 401:
            headers.setdefault("WWW-Authenticate", 'Bearer realm="govlake"')
        return JSONResponse(self.body(instance), status_code=self.status, headers=headers, media_type=PROBLEM)


class ProblemModel(BaseModel):
    type: str
    title: str
    status: int
    detail: str
    instance: str = ""


ERRORS = {s: {"model": ProblemModel, "content": {PROBLEM: {}}, "description": Problem.TITLES[s]}
          for s in (401, 403, 422, 429)}


# ---- request size ----------------------------------------------------------------------------
class _TooLarge(BaseException):  # not Exception: FastAPI turns those into 400 while reading a body
    pass


class BodyLimit:
    """Pure ASGI middleware: a request body over ``limit`` bytes gets 413, whether it declares
    its length or is sent chunked (counted as it arrives; nothing over the limit is buffered)."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, int(limit)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        n = headers.get(b"content-length")
        if n is not None and (not n.isdigit() or int(n) > self.limit):
            return await self._reject(scope, send)
        seen = 0
        started = False

        async def counted():
            nonlocal seen
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > self.limit:
                    raise _TooLarge()
            return msg

        async def watched_send(msg):
            nonlocal started
            if msg["type"] == "http.response.start":
                started = True
            await send(msg)

        try:
            await self.app(scope, counted, watched_send)
        except _TooLarge:
            if not started:
                await self._reject(scope, send)

    async def _reject(self, scope, send):
        resp = Problem(413, "too-large", f"the request body exceeds {self.limit} bytes").response(scope.get("path", ""))
        await resp(scope, None, send)


# ---- rate limits ----------------------------------------------------------------------------
class RateLimiter:
    """A token bucket per client (in the service's memory)."""

    def __init__(self):
        self._buckets: dict[str, list[float]] = {}
        self._params: dict[str, tuple[float, int]] = {}
        self._lock = threading.Lock()

    def peek(self, key: str) -> float:
        """Seconds until ``key``'s bucket has a token again (0 if it has one or is unknown)."""
        with self._lock:
            b = self._buckets.get(key)
            if b is None:
                return 0.0
            tokens, last, rate, burst = b[0], b[1], *self._params.get(key, (1.0, 1))
            tokens = min(float(burst), tokens + (time.monotonic() - last) * rate)
            return 0.0 if tokens >= 1.0 else (1.0 - tokens) / rate

    def take(self, key: str, per_second: float, burst: int) -> float:
        """0 when allowed, else the seconds until a request would be allowed."""
        now = time.monotonic()
        with self._lock:
            self._params[key] = (per_second, burst)
            tokens, last = self._buckets.get(key, [float(burst), now])
            tokens = min(float(burst), tokens + (now - last) * per_second)
            if tokens >= 1.0:
                self._buckets[key] = [tokens - 1.0, now]
                return 0.0
            self._buckets[key] = [tokens, now]
            return (1.0 - tokens) / per_second


FAILED_AUTH_RATE, FAILED_AUTH_BURST = 0.2, 5  # 5 wrong secrets, then one try per 5 s


# ---- request bodies -------------------------------------------------------------------------
Purpose = Annotated[str, Field(min_length=1, max_length=100, description="the purpose of this use (must be granted)")]


class QueryBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    sql: str = Field(min_length=1, max_length=100_000)
    purpose: Purpose
    format: Literal["json", "csv", "parquet", "arrow"] = "json"
    limit: int | None = Field(default=-1, description="row limit; null = every row; default: the server's default")
    timeout: float | None = Field(default=None, description="seconds; at most the server's limit")


class LookupBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    purpose: Purpose
    key: str = Field(min_length=1, max_length=200, description="the key value: ID number, USCC or join token")


class VerifyBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    resource: str = Field(min_length=1, max_length=100)
    purpose: Purpose
    claims: list[dict[str, str | None]] = Field(min_length=1, description="each: the key and the claimed fields")


class AccessRequestBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    product: str = Field(min_length=1, max_length=100)
    purpose: Purpose
    columns: list[str] | None = None


class PersonBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id_number: str = Field(min_length=15, max_length=40)


class DecisionBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str = Field(min_length=1, max_length=1000)
    days: int | None = Field(default=None, ge=1, le=366)
    expires: dt.date | None = None


# ---- the service ----------------------------------------------------------------------------
def normalise_claim(element: str, value) -> str | None:
    """A claimed value in the form the data is standardized to (so formatting never decides)."""
    if value is None:
        return None
    v = unicodedata.normalize("NFKC", str(value)).strip()
    if element in ("id_number", "legal_rep_id_number", "uscc", "phone"):
        return masking.normalise(element, v)
    if element == "birth_date":
        digits = "".join(ch for ch in v if ch.isdigit())
        return f"{digits[:4]}-{digits[4:6]}-{digits[6:8]}" if len(digits) == 8 else v
    return "".join(v.split()) if element in ("name", "legal_rep_name") else v


class Service:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.lake = settings.lake
        self.registry = Registry(settings.registry_path)
        self.tokens = TokenIssuer(private_file(settings.jwt_key_path), settings.token_ttl)
        self.limiter = RateLimiter()
        self.failures = RateLimiter()  # failed authentications
        self.query_slots = threading.BoundedSemaphore(settings.max_concurrent_queries)
        self._local = threading.local()
        self._meta_cache: tuple | None = None
        self._meta_checked = 0.0
        self._roles_cache: tuple | None = None
        from govlake.sharing.accesses import AccessLog

        self.accesses = AccessLog(self.lake)

    # -- shared helpers
    def meta(self) -> dict:
        """Product metadata, re-read when a model file changes (checked at most once a second)."""
        now = time.monotonic()
        if self._meta_cache is not None and now - self._meta_checked < 1.0:
            return self._meta_cache[1]
        files = products.model_files()
        stamp = tuple(sorted((str(p), p.stat().st_mtime_ns) for p in files))
        if self._meta_cache is None or self._meta_cache[0] != stamp:
            self._meta_cache = (stamp, products.load())
        self._meta_checked = now
        return self._meta_cache[1]

    def roles(self) -> dict:
        """The reviewed grants merged with the approved ones, re-read whenever the grants file or
        the access-request store changes (an approval or a revocation takes effect at once)."""
        from govlake import grants

        def st(p):
            try:
                s = os.stat(p)
                return (s.st_mtime_ns, s.st_size, s.st_ino)
            except FileNotFoundError:
                return None

        db = self.lake.access_db
        stamp = (st(grants.grants_file()), st(db), st(f"{db}-wal"), st(f"{db}-journal"))
        cached = self._roles_cache
        if cached is not None and cached[0] == stamp:
            return cached[1]
        roles = query.load_roles(self.lake)
        self._roles_cache = (stamp, roles)
        return roles

    def cursor(self):
        """A DuckDB connection of this thread for the service's own fixed SQL (lookups,
        verifications); user SQL never runs here."""
        con = getattr(self._local, "con", None)
        if con is None:
            con = duckdb.connect(":memory:", config={"threads": 1, "memory_limit": "256MB"})
            self._local.con = con
        return con

    def authenticate(self, request: Request, creds: HTTPAuthorizationCredentials | None) -> Client:
        if creds is None or creds.scheme.lower() != "bearer" or not creds.credentials:
            raise Problem(401, "unauthenticated", "a bearer token is required: POST /v1/oauth/token "
                          "with your client id and secret (grant_type=client_credentials)")
        try:
            client = self.tokens.verify(creds.credentials, self.registry)
        except AuthError as exc:
            raise Problem(401, "invalid-token", str(exc)) from exc
        rl = self.settings.rate_limit(client.kind)
        wait = self.limiter.take(client.client_id, rl.per_second, rl.burst)
        if wait > 0:
            raise Problem(429, "rate-limited", f"client {client.client_id} exceeds {rl.per_second:g} "
                          f"requests/s (burst {rl.burst}); retry after {math.ceil(wait)} s",
                          headers={"Retry-After": str(max(1, math.ceil(wait)))})
        request.state.client = client
        return client

    def actor(self, client: Client) -> dict:
        return {"client_id": client.client_id, "kind": client.kind, "department": client.department,
                "name": client.name, "role": client.role}

    def begin(self, endpoint: str, client: Client, **payload) -> dict:
        return audit.begin(self.lake, endpoint, {"actor": self.actor(client), **payload})

    def finish(self, intent: dict, t0: float, **outcome) -> dict:
        """The request's outcome, durable in the audit log; then the per-person index."""
        outcome.setdefault("status", "ok")
        outcome["duration_ms"] = int((time.monotonic() - t0) * 1000)
        entry = audit.finish(self.lake, intent["seq"], outcome)
        if outcome.get("persons"):
            pl = intent["payload"]
            self.accesses.record(seq=intent["seq"], ts=intent["ts"], actor=pl.get("actor") or {},
                                 purpose=pl.get("purpose", ""), endpoint=pl.get("request_kind", ""),
                                 resource=pl.get("resource") or ",".join(sorted(outcome.get("versions") or {})),
                                 fields=outcome.get("fields") or [], persons=outcome["persons"])
        return entry

    def role_of(self, client: Client) -> str:
        if not client.role:
            raise Problem(403, "no-role", f"client {client.client_id} ({client.kind}) has no data role")
        return client.role


_FORBIDDEN = ("role", "purpose", "product", "column", "lookup", "resource", "grants", "approved")


def refused(exc: query.QueryRefused) -> Problem:
    """A refusal by the engine: 403 when the caller is not granted what it asked for (role,
    purpose, product, column, lookup); 422 when the request itself is not acceptable (SQL
    forms, limits, claims, unknown tables)."""
    first = exc.what.split(" ")[0].lower()
    status = 403 if first in _FORBIDDEN and "no such" not in exc.why and "has no" not in exc.why else 422
    return Problem(status, "refused" if status == 422 else "forbidden", f"{exc.what}: {exc.why}",
                   refused=exc.what, reason=exc.why)


# ---- result encoders ------------------------------------------------------------------------
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(v) -> str:
    """A CSV cell; text a spreadsheet would run as a formula is prefixed with ``'`` (OWASP)."""
    if v is None:
        return ""
    s = v.isoformat() if isinstance(v, (dt.date, dt.datetime)) else str(v)
    if isinstance(v, str) and s.startswith(_FORMULA_START):
        return "'" + s
    return s


def _json_default(v):
    if isinstance(v, (dt.date, dt.datetime, dt.time)):
        return v.isoformat()
    if isinstance(v, bytes):
        return v.hex()
    return str(v)


class _Sink(io.RawIOBase):
    """A write-only stream whose bytes are collected for the response generator."""

    def __init__(self):
        self.chunks: list[bytes] = []

    def writable(self):
        return True

    def write(self, b):
        self.chunks.append(bytes(b))
        return len(b)

    def take(self) -> bytes:
        out, self.chunks = b"".join(self.chunks), []
        return out


def encode_batches(fmt: str, schema: pa.Schema, batches: Iterator[pa.RecordBatch], header: dict,
                   stats: dict) -> Iterator[bytes]:
    """Encode record batches as they come; ``stats`` receives rows and the SHA-256 of the bytes."""
    h = hashlib.sha256()
    rows = 0

    def out(b: bytes) -> bytes:
        h.update(b)
        return b

    if fmt == "json":
        yield out(("{" + json.dumps(header, ensure_ascii=False)[1:-1] + ',"columns":'
                   + json.dumps(schema.names, ensure_ascii=False) + ',"rows":[').encode("utf-8"))
        first = True
        for batch in batches:
            cols = [c.to_pylist() for c in batch.columns]
            parts = []
            for i in range(batch.num_rows):
                parts.append(("" if first else ",") + json.dumps([c[i] for c in cols], ensure_ascii=False,
                                                                  default=_json_default))
                first = False
            rows += batch.num_rows
            if parts:
                yield out("".join(parts).encode("utf-8"))
        yield out(f'],"row_count":{rows}}}'.encode("utf-8"))
    elif fmt == "csv":
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow([csv_cell(n) for n in schema.names])
        yield out(buf.getvalue().encode("utf-8"))
        for batch in batches:
            buf.seek(0)
            buf.truncate()
            cols = [c.to_pylist() for c in batch.columns]
            for i in range(batch.num_rows):
                w.writerow([csv_cell(c[i]) for c in cols])
            rows += batch.num_rows
            yield out(buf.getvalue().encode("utf-8"))
    else:
        import pyarrow.ipc as ipc
        import pyarrow.parquet as pq

        sink = _Sink()
        meta = {b"govlake": json.dumps(header, ensure_ascii=False).encode("utf-8")}
        schema = schema.with_metadata(meta)
        writer = (ipc.new_stream(sink, schema) if fmt == "arrow"
                  else pq.ParquetWriter(sink, schema, compression="zstd"))
        for batch in batches:
            if fmt == "arrow":
                writer.write_batch(batch.replace_schema_metadata(meta))
            else:
                writer.write_table(pa.Table.from_batches([batch], schema=schema))
            rows += batch.num_rows
            chunk = sink.take()
            if chunk:
                yield out(chunk)
        writer.close()
        chunk = sink.take()
        if chunk:
            yield out(chunk)
    stats["rows"] = rows
    stats["sha256"] = h.hexdigest()


MEDIA = {"json": "application/json", "csv": "text/csv; charset=utf-8",
         "parquet": "application/vnd.apache.parquet", "arrow": "application/vnd.apache.arrow.stream"}


# ---- the app --------------------------------------------------------------------------------
bearer = HTTPBearer(auto_error=False)
basic = HTTPBasic(auto_error=False)


def client_dep(request: Request, creds: HTTPAuthorizationCredentials | None = Depends(bearer)) -> Client:
    return request.app.state.service.authenticate(request, creds)


ClientDep = Annotated[Client, Depends(client_dep)]


def create_app(settings: Settings) -> FastAPI:
    svc = Service(settings)
    app = FastAPI(
        title="govlake sharing service (政务数据共享服务)",
        version=API_VERSION,
        description="The standard interfaces (标准化接口) of govlake: catalog, SQL on granted "
                    "resources, record lookup and verification (核验). Authenticate with OAuth2 "
                    "client credentials; every request states its purpose and is audited.",
    )
    app.state.service = svc

    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)

    @app.exception_handler(Problem)
    async def _problem(request: Request, exc: Problem):
        return exc.response(request.url.path)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        errs = exc.errors()
        detail = "; ".join(f"{'.'.join(str(x) for x in e.get('loc', ()))}: {e.get('msg')}" for e in errs[:5])
        return Problem(422, "invalid-request", detail or "invalid request").response(request.url.path)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        import logging

        logging.getLogger("govlake.sharing").exception("unexpected error on %s", request.url.path)
        return Problem(500, "internal-error", f"the service failed ({type(exc).__name__}); "
                       "the error is in the service log").response(request.url.path)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        return Problem(exc.status_code, "http-error", str(exc.detail)).response(request.url.path)

    # -- tokens
    @app.post("/v1/oauth/token", tags=["identity"], responses={401: ERRORS[401], 422: ERRORS[422]})
    def token(request: Request, grant_type: Annotated[str, Form()], client_id: Annotated[str | None, Form()] = None,
              client_secret: Annotated[str | None, Form()] = None,
              basic_creds: HTTPBasicCredentials | None = Depends(basic)) -> dict:
        """OAuth2 client credentials (RFC 6749 §4.4): id + secret in the form or HTTP Basic."""
        if grant_type != "client_credentials":
            raise Problem(422, "unsupported-grant-type", "grant_type must be client_credentials")
        cid = client_id or (basic_creds.username if basic_creds else None)
        secret = client_secret or (basic_creds.password if basic_creds else None)
        if not cid or not secret:
            raise Problem(401, "invalid-client", "client_id and client_secret are required")
        # failed attempts are limited per client id (secret guessing), before the (deliberately
        # slow) secret check; not per address: behind a proxy every client shares one. Tokens
        # already issued keep working while a client id is held back.
        wait = svc.failures.peek(f"fail:{cid}")
        if wait > 0:
            raise Problem(429, "too-many-failures", f"too many failed attempts; retry after {math.ceil(wait)} s",
                          headers={"Retry-After": str(max(1, math.ceil(wait)))})
        try:
            client = svc.registry.check_secret(cid, secret)
        except AuthError as exc:
            svc.failures.take(f"fail:{cid}", FAILED_AUTH_RATE, FAILED_AUTH_BURST)
            raise Problem(401, "invalid-client", str(exc)) from exc
        rl = settings.rate_limit(client.kind)
        wait = svc.limiter.take(client.client_id, rl.per_second, rl.burst)
        if wait > 0:
            raise Problem(429, "rate-limited", f"retry after {math.ceil(wait)} s",
                          headers={"Retry-After": str(max(1, math.ceil(wait)))})
        return svc.tokens.issue(client)

    @app.get("/v1/whoami", tags=["identity"], responses={401: ERRORS[401], 429: ERRORS[429]})
    def whoami(client: ClientDep) -> dict:
        return client.public()

    # -- catalog
    @app.get("/v1/catalog", tags=["catalog"], responses={401: ERRORS[401], 429: ERRORS[429]})
    def get_catalog(client: ClientDep) -> dict:
        """The shared catalog (共享目录): resources, versions, grades, sharing types, quality, freshness."""
        from govlake import catalog

        data = catalog.collect(svc.lake)
        keep = ("name", "title", "code", "owner_department", "owner", "sharing", "grade", "update_cycle",
                "summary", "current_version", "row_count", "published_at", "gate", "freshness", "columns")
        out = []
        for p in data.get("products", []):
            item = {k: p.get(k) for k in keep if k in p}
            if isinstance(item.get("gate"), dict):
                item["gate"] = {k: item["gate"].get(k) for k in ("passed", "suite", "evaluated") if k in item["gate"]}
            if isinstance(item.get("columns"), list):
                item["columns"] = [{k: c.get(k) for k in ("name", "grade", "element", "description") if k in c}
                                   for c in item["columns"]]
            interface = (svc.meta().get(p.get("name")) or None)
            if interface is not None and interface.extra.get("interface"):
                item["interface"] = interface.extra["interface"]
            out.append(item)
        return {"resources": out, "generated_at": data.get("generated_at")}

    # -- SQL
    @app.post("/v1/query", tags=["data"], responses={200: {"content": {m: {} for m in MEDIA.values()}},
                                                     **{s: ERRORS[s] for s in (401, 403, 422, 429)}})
    def run_sql(body: QueryBody, request: Request, client: ClientDep):
        """One read-only SELECT on granted resources, masked per the role's clearance; streamed."""
        role = svc.role_of(client)
        t0 = time.monotonic()
        limit = settings.default_row_limit if body.limit == -1 else body.limit
        intent = svc.begin("query", client, role=role, purpose=body.purpose, sql=body.sql,
                           sql_sha256=hashlib.sha256(body.sql.encode("utf-8")).hexdigest(),
                           format=body.format, limit=limit)
        base: dict[str, Any] = {}
        try:
            if limit is not None and limit < 1:
                raise query.QueryRefused(f"limit {limit}", "the row limit must be ≥ 1, or null for every row")
            timeout = query.check_timeout(body.timeout if body.timeout is not None else settings.query_timeout,
                                          settings.query_timeout)
            a = query.analyze(body.sql)
            auth = query.authorize(svc.lake, role, body.purpose, a.tables, base=base, meta=svc.meta(),
                                   roles=svc.roles())
            run_sql = body.sql
            if auth.role.aggregate_only:
                run_sql = query.aggregate_sql(body.sql)
                base["aggregate_only"] = {"min_group_size": auth.role.min_group_size}
            if not svc.query_slots.acquire(timeout=timeout):
                raise Problem(429, "busy", f"{settings.max_concurrent_queries} queries are running; retry",
                              headers={"Retry-After": "1"})
            try:
                prep = query.prepare(svc.lake, auth, a, memory_limit=settings.query_memory,
                                     threads=settings.query_threads)
            except BaseException:
                svc.query_slots.release()
                raise
        except query.QueryRefused as exc:
            svc.finish(intent, t0, status="refused", refused=exc.what, reason=exc.why, **base)
            raise refused(exc) from exc
        except Problem as exc:
            svc.finish(intent, t0, status="refused", reason=exc.detail, **base)
            raise
        con = prep.con
        header = {"versions": auth.wanted, "masked": {p: c for p, c in prep.treatments.items() if c},
                  "audit_seq": intent["seq"]}
        timer = threading.Timer(timeout, con.interrupt)
        timer.start()
        try:
            rel = con.sql(run_sql)
            reader = rel.to_arrow_reader(10_000)
            if auth.role.aggregate_only:  # groups only: small; suppress those under k, then stream
                table, base["suppressed_groups"] = query.suppress(reader.read_all(), auth.role.min_group_size)
                header["suppressed_groups"] = base["suppressed_groups"]
                header["min_group_size"] = auth.role.min_group_size
                reader = pa.RecordBatchReader.from_batches(table.schema, table.to_batches())
            first = reader.read_next_batch()
        except StopIteration:
            first = None
        except duckdb.Error as exc:
            timer.cancel()
            con.close()
            svc.query_slots.release()
            msg = (f"query timed out after {timeout:g} s" if isinstance(exc, duckdb.InterruptException)
                   else str(exc).strip().splitlines()[0])
            svc.finish(intent, t0, status="error", error=msg, **base)
            status = 422
            raise Problem(status, "query-failed", msg) from exc

        def batches():
            n = 0
            b = first
            while b is not None:
                if limit is not None and n + b.num_rows > limit:
                    b = b.slice(0, limit - n)
                n += b.num_rows
                yield b
                if limit is not None and n >= limit:
                    return
                try:
                    b = reader.read_next_batch()
                except StopIteration:
                    return

        person_cols = _person_columns(reader.schema.names, auth, svc.meta())
        persons: set[str] = set()

        def watched():
            for b in batches():
                if person_cols and len(persons) <= MAX_PERSONS_PER_REQUEST:
                    for col in person_cols:
                        persons.update(v for v in b.column(col).to_pylist() if v)
                yield b

        def stream():
            stats: dict = {}
            status, error = "ok", None
            try:
                yield from encode_batches(body.format, reader.schema, watched(), header, stats)
            except duckdb.Error as exc:
                status = "error"
                error = (f"query timed out after {timeout:g} s" if isinstance(exc, duckdb.InterruptException)
                         else str(exc).strip().splitlines()[0])
                raise
            except BaseException as exc:  # client went away
                status, error = "aborted", type(exc).__name__
                raise
            finally:
                timer.cancel()
                con.close()
                svc.query_slots.release()
                tokens = _tokens_of(persons)
                svc.finish(intent, t0, status=status, error=error, rows=stats.get("rows"),
                           result_sha256=stats.get("sha256"), result_columns=reader.schema.names,
                           fields=reader.schema.names, versions=auth.wanted, masked_columns=prep.treatments,
                           persons=tokens[:MAX_PERSONS_PER_REQUEST],
                           persons_truncated=len(persons) > MAX_PERSONS_PER_REQUEST, **base)

        headers = {"X-Govlake-Versions": json.dumps(auth.wanted), "X-Govlake-Audit-Seq": str(intent["seq"])}
        return StreamingResponse(stream(), media_type=MEDIA[body.format], headers=headers)

    # -- lookup
    @app.post("/v1/resources/{resource}/lookup", tags=["interfaces"],
              responses={s: ERRORS[s] for s in (401, 403, 422, 429)})
    def lookup(resource: str, body: LookupBody, client: ClientDep) -> dict:
        """The record(s) of one key, masked per the role: ID number, USCC or a join token."""
        role = svc.role_of(client)
        t0 = time.monotonic()
        intent = svc.begin("lookup", client, role=role, purpose=body.purpose, resource=resource,
                           key_sha256=hashlib.sha256(body.key.encode("utf-8")).hexdigest())
        base: dict[str, Any] = {}
        try:
            pm = svc.meta().get(resource)
            iface = (pm.extra.get("interface") if pm else None) or {}
            if not iface.get("key"):
                raise query.QueryRefused(f"resource {resource}", "has no lookup interface (no such resource "
                                         "or no key declared)")
            auth = query.authorize(svc.lake, role, body.purpose, [resource], base=base, meta=svc.meta(),
                                   roles=svc.roles())
            _row_level(auth, "lookup")
            version = auth.wanted[resource]
            base_file = query.product_file(svc.lake, resource, version)
            plan, _ = query.plan_for(auth, resource, query.column_names(base_file))
            keycol = iface["key"]
            kplan = next((c for c in plan if c.column == keycol), None)
            if kplan is None:
                raise query.QueryRefused(f"column {keycol} of {resource}", "not covered by your grant")
            is_token = body.key.startswith(("v1:", "v1sm3:"))
            key = None
            if kplan.treatment == "clear" and not is_token:
                value = normalise_claim(kplan.element or keycol, body.key)
            elif kplan.treatment == "token":
                key = masking.load_key()
                value = body.key if is_token else masking.token(kplan.element or keycol, body.key, key, "sha256")
            else:
                raise query.QueryRefused(f"lookup by {keycol}", f"{keycol} is {kplan.treatment} for role {role}; "
                                         "lookups need it in clear or as a join token")
            treat = {c.column: c.treatment for c in plan if c.treatment != "clear"}
            if treat:
                from govlake.sharing import renditions

                internal = query.internal_reader(auth.role, pm)
                if key is None and any(c.treatment == "token" for c in plan):
                    key = masking.load_key()
                path = renditions.ensure(svc.lake, resource, version, plan, internal, key)
            else:
                path = base_file
            idx = fastpath.Index.ready(svc.lake, resource, version, keycol, path)
            if idx is not None:  # the version's key-sorted lookup copy (built in the background)
                records = idx.lookup(value, [c.column for c in plan])
            else:
                cols = ", ".join(masking.sql_ident(c.column) for c in plan)
                cur = svc.cursor().execute(
                    f"SELECT {cols} FROM {crypto.read_parquet_sql(path, svc.cursor())} WHERE {masking.sql_ident(keycol)} = ?", [value])
                names = [d[0] for d in cur.description]
                records = [dict(zip(names, row)) for row in cur.fetchall()]
        except query.QueryRefused as exc:
            svc.finish(intent, t0, status="refused", refused=exc.what, reason=exc.why, **base)
            raise refused(exc) from exc
        except masking.TokenKeyError as exc:
            svc.finish(intent, t0, status="error", error=str(exc))
            raise Problem(503, "no-token-key", "join tokens are unavailable on this server") from exc
        persons = _person_tokens(kplan.element, [value] if records else [])
        out = svc.finish(intent, t0, rows=len(records), fields=[c.column for c in plan], persons=persons,
                         result_sha256=hashlib.sha256(json.dumps(records, ensure_ascii=False, default=_json_default
                                                                 ).encode("utf-8")).hexdigest(), **base)
        return {"resource": resource, "version": version, "records": json.loads(json.dumps(
            records, ensure_ascii=False, default=_json_default)), "masked": treat, "audit_seq": intent["seq"],
            "outcome_seq": out["seq"]}

    # -- verification
    @app.post("/v1/verify", tags=["interfaces"], responses={s: ERRORS[s] for s in (401, 403, 422, 429)})
    def verify(body: VerifyBody, client: ClientDep) -> dict:
        """核验: for each claim, ``match`` / ``no_match`` per claimed field — and nothing else.

        Usable by a role with no clearance for the values; "no such record" is not told apart
        from "no match"."""
        role = svc.role_of(client)
        t0 = time.monotonic()
        if len(body.claims) > settings.max_claims:
            raise Problem(422, "too-many-claims", f"{len(body.claims)} claims; at most {settings.max_claims} per request")
        fields_claimed = sorted({k for c in body.claims for k in c})
        intent = svc.begin("verify", client, role=role, purpose=body.purpose, resource=body.resource,
                           claims=len(body.claims), fields=fields_claimed)
        base: dict[str, Any] = {}
        resource = body.resource
        try:
            pm = svc.meta().get(resource)
            iface = (pm.extra.get("interface") if pm else None) or {}
            if not iface.get("key") or not iface.get("verify"):
                raise query.QueryRefused(f"resource {resource}", "has no verification interface")
            keycol, allowed = iface["key"], list(iface["verify"])
            auth = query.authorize(svc.lake, role, body.purpose, [resource], base=base, meta=svc.meta(),
                                   roles=svc.roles())
            _row_level(auth, "verification")
            version = auth.wanted[resource]
            g = auth.approved.get(resource)
            if g is not None and g.columns is not None:
                allowed = [f for f in allowed if f in g.columns]
            for i, c in enumerate(body.claims):
                if not c.get(keycol):
                    raise query.QueryRefused(f"claim {i}", f"needs the key {keycol}")
                extra = [k for k in c if k != keycol and k not in allowed]
                if extra:
                    raise query.QueryRefused(f"claim {i} field {', '.join(extra)}",
                                             f"verifiable fields of {resource}: {', '.join(allowed)}")
                if len(c) < 2:
                    raise query.QueryRefused(f"claim {i}", "claims no field to verify")
            element = {col.name: (col.element or col.name) for col in pm.columns}
            keys = [normalise_claim(element.get(keycol, keycol), c[keycol]) for c in body.claims]
            wanted_fields = sorted({k for c in body.claims for k in c if k != keycol})
            base_file = query.product_file(svc.lake, resource, version)
            idx = fastpath.Index.ready(svc.lake, resource, version, keycol, base_file)
            found: dict[str, list[tuple]] = {}
            if idx is not None:
                found = idx.rows_for(keys, wanted_fields)
            else:
                cols = ", ".join(masking.sql_ident(x) for x in [keycol] + wanted_fields)
                con = svc.cursor()
                tbl = con.execute(f"SELECT {cols} FROM {crypto.read_parquet_sql(base_file, con)} WHERE "
                                  f"{masking.sql_ident(keycol)} IN (SELECT unnest(?::VARCHAR[]))",
                                  [sorted(set(keys))]).fetchall()
                for row in tbl:
                    found.setdefault(row[0], []).append(row[1:])
        except query.QueryRefused as exc:
            svc.finish(intent, t0, status="refused", refused=exc.what, reason=exc.why, **base)
            raise refused(exc) from exc
        results = []
        for i, (c, k) in enumerate(zip(body.claims, keys)):
            recs = found.get(k, [])
            res = {}
            for f in (x for x in c if x != keycol):
                j = wanted_fields.index(f)
                claimed = normalise_claim(element.get(f, f), c[f])
                ok = claimed is not None and any(r[j] is not None and normalise_claim(element.get(f, f), r[j]) == claimed
                                                 for r in recs)
                res[f] = "match" if ok else "no_match"
            results.append({"index": i, "fields": res})
        persons = _person_tokens(element.get(keycol, keycol), keys)
        summary = {"match": sum(v == "match" for r in results for v in r["fields"].values()),
                   "no_match": sum(v == "no_match" for r in results for v in r["fields"].values())}
        svc.finish(intent, t0, rows=len(results), persons=persons, answers=summary, fields=wanted_fields,
                   result_sha256=hashlib.sha256(json.dumps(results).encode()).hexdigest(), **base)
        return {"resource": resource, "version": version, "results": results, "audit_seq": intent["seq"]}

    # -- per-person access records (the citizen's "who used my data")
    def _portal(client: Client) -> None:
        if client.kind not in ("citizen_portal", "admin"):
            raise Problem(403, "not-a-citizen-portal", f"client {client.client_id} is a {client.kind}; only a "
                          "registered citizen portal reads per-person access records")

    def _accesses_of(client: Client, token: str) -> dict:
        t0 = time.monotonic()
        intent = svc.begin("person_accesses", client, token_sha256=hashlib.sha256(token.encode()).hexdigest())
        try:
            rows = svc.accesses.of(token)
        except ValueError as exc:
            svc.finish(intent, t0, status="refused", reason=str(exc))
            raise Problem(422, "invalid-token", str(exc)) from exc
        svc.finish(intent, t0, rows=len(rows))
        return {"person": token, "accesses": rows}

    @app.get("/v1/persons/{token}/accesses", tags=["persons"],
             responses={s: ERRORS[s] for s in (401, 403, 422, 429)})
    def person_accesses(token: str, client: ClientDep) -> dict:
        """Who used this person's data: client, department, when, purpose, resource, fields."""
        _portal(client)
        return _accesses_of(client, token)

    @app.post("/v1/persons/accesses", tags=["persons"], responses={s: ERRORS[s] for s in (401, 403, 422, 429)})
    def person_accesses_by_id(body: PersonBody, client: ClientDep) -> dict:
        """The same, by ID number (in the body, never in a URL); the service computes the token."""
        _portal(client)
        try:
            tok = masking.token("id_number", normalise_claim("id_number", body.id_number), masking.load_key(), "sha256")
        except masking.TokenKeyError as exc:
            raise Problem(503, "no-token-key", "join tokens are unavailable on this server") from exc
        return _accesses_of(client, tok)

    # -- access requests (有条件共享)
    def _access(fn, *args, **kw):
        try:
            return fn(*args, **kw)
        except access_requests.NotAuthorized as exc:
            raise Problem(403, "not-authorized", str(exc)) from exc
        except access_requests.NotFound as exc:
            raise Problem(404, "not-found", str(exc)) from exc
        except access_requests.AccessRequestError as exc:
            raise Problem(422, "refused", str(exc)) from exc

    @app.post("/v1/access-requests", tags=["access"], responses={s: ERRORS[s] for s in (401, 403, 422, 429)})
    def file_request(body: AccessRequestBody, client: ClientDep) -> dict:
        """File a request for a resource for the caller's own role (the role is the registration's)."""
        role = svc.role_of(client)
        r = _access(access_requests.request, svc.lake, role, body.product, body.purpose, body.columns,
                    requester=client.name)
        return _public(r)

    def _approver(client: Client) -> Client:
        if client.kind != "approver":
            raise Problem(403, "not-an-approver", f"client {client.client_id} is a {client.kind}, not an approver")
        return client

    @app.post("/v1/access-requests/{request_id}/approve", tags=["access"],
              responses={s: ERRORS[s] for s in (401, 403, 422, 429)})
    def approve(request_id: str, body: DecisionBody, client: ClientDep) -> dict:
        """Approve a request: only an approver of the owning department, never the requester."""
        a = _approver(client)
        return _public(_access(access_requests.approve, svc.lake, request_id, a.name, a.department,
                               reason=body.reason, days=body.days, expires=body.expires))

    @app.post("/v1/access-requests/{request_id}/reject", tags=["access"],
              responses={s: ERRORS[s] for s in (401, 403, 422, 429)})
    def reject(request_id: str, body: DecisionBody, client: ClientDep) -> dict:
        a = _approver(client)
        return _public(_access(access_requests.reject, svc.lake, request_id, a.name, a.department,
                               reason=body.reason))

    @app.post("/v1/grants/{grant_id}/revoke", tags=["access"],
              responses={s: ERRORS[s] for s in (401, 403, 422, 429)})
    def revoke(grant_id: str, body: DecisionBody, client: ClientDep) -> dict:
        a = _approver(client)
        return _public(_access(access_requests.revoke, svc.lake, grant_id, a.name, a.department,
                               reason=body.reason))

    return app


def _public(obj) -> dict:
    if hasattr(obj, "to_dict"):
        return json.loads(json.dumps(obj.to_dict(), ensure_ascii=False, default=_json_default))
    if hasattr(obj, "__dataclass_fields__"):
        import dataclasses

        return json.loads(json.dumps(dataclasses.asdict(obj), ensure_ascii=False, default=_json_default))
    return json.loads(json.dumps(obj, ensure_ascii=False, default=_json_default))


MAX_PERSONS_PER_REQUEST = 100_000


def _row_level(auth, what: str) -> None:
    if auth.role.aggregate_only:
        raise query.QueryRefused(f"role {auth.role.name} {what}", "the role is aggregate-only (statistics): "
                                 "it reads counted groups, never individual records")


def _person_columns(names: list[str], auth, meta: dict) -> list[str]:
    """Result columns that carry a person's key (clear ID number or its join token) of a
    resource the query read; an aggregate without them records nothing per person."""
    keys = set()
    for product in auth.wanted:
        pm = meta.get(product)
        if pm is None:
            continue
        for c in pm.columns:
            if c.element in ("id_number", "legal_rep_id_number"):
                keys.add(c.name)
    return [n for n in names if n in keys]


def _tokens_of(values) -> list[str]:
    clear = [v for v in values if isinstance(v, str) and not v.startswith(("v1:", "v1sm3:")) and "*" not in v]
    tokens = {v for v in values if isinstance(v, str) and v.startswith("v1:")}
    if clear:
        tokens.update(_person_tokens("id_number", clear))
    return sorted(tokens)


def _person_tokens(element: str, values: list) -> list[str]:
    """Join tokens of the persons a request returned or checked (per-person access records);
    never clear ID numbers. Only person keys (ID numbers) are recorded."""
    if element not in ("id_number", "legal_rep_id_number") or not values:
        return []
    try:
        key = masking.load_key()
    except masking.TokenKeyError:
        return []
    out = []
    for v in values:
        if v is None:
            continue
        out.append(v if str(v).startswith("v1:") else masking.token("id_number", v, key, "sha256"))
    return sorted(set(out))


def openapi_document(settings: Settings) -> dict:
    return create_app(settings).openapi()


def committed_openapi_path() -> Path:
    from govlake import config

    return config.project_root() / "docs" / "openapi.json"
