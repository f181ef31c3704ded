"""A client of the sharing service (what ``govlake query`` / ``govlake verify`` use).

It holds only a client id and secret (``GOVLAKE_CLIENT_ID`` / ``GOVLAKE_CLIENT_SECRET``, or a
credentials file ``~/.config/govlake/credentials.json`` written by ``govlake clients add
--save``) and the service URL (``GOVLAKE_SERVICE_URL``, default http://127.0.0.1:8765). It never
opens lake files, the grants or a key: everything it learns comes over HTTP.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

DEFAULT_URL = "http://127.0.0.1:8765"


class ServiceError(RuntimeError):
    """The service answered with an error (problem details) or could not be reached."""

    def __init__(self, status: int, problem: dict):
        self.status, self.problem = status, problem
        detail = problem.get("detail") or problem.get("title") or "error"
        super().__init__(f"{status} {problem.get('title', '')}: {detail}".strip())


def credentials_file() -> Path:
    return Path(os.environ.get("GOVLAKE_CREDENTIALS_FILE")
                or Path.home() / ".config" / "govlake" / "credentials.json")


def save_credentials(client_id: str, secret: str, url: str | None = None, path: Path | None = None) -> Path:
    p = Path(path) if path else credentials_file()
    p.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump({"client_id": client_id, "client_secret": secret, "url": url or DEFAULT_URL}, fh)
    return p


@dataclass
class Credentials:
    client_id: str
    client_secret: str
    url: str

    @classmethod
    def from_env(cls) -> "Credentials":
        cid, secret = os.environ.get("GOVLAKE_CLIENT_ID"), os.environ.get("GOVLAKE_CLIENT_SECRET")
        url = os.environ.get("GOVLAKE_SERVICE_URL")
        if not (cid and secret):
            p = credentials_file()
            if p.is_file():
                doc = json.loads(p.read_text(encoding="utf-8"))
                cid, secret = cid or doc.get("client_id"), secret or doc.get("client_secret")
                url = url or doc.get("url")
        if not (cid and secret):
            raise ServiceError(401, {"title": "Unauthorized", "detail":
                                     "no client credentials: set GOVLAKE_CLIENT_ID and GOVLAKE_CLIENT_SECRET, or "
                                     f"save them in {credentials_file()} (an administrator registers you with "
                                     "`govlake clients add … --save`)"})
        return cls(cid, secret, (url or DEFAULT_URL).rstrip("/"))


class ServiceClient:
    def __init__(self, creds: Credentials, timeout: float = 120.0):
        self.creds = creds
        self.http = httpx.Client(base_url=creds.url, timeout=timeout)
        self._token: str | None = None
        self._token_exp = 0.0

    def close(self) -> None:
        self.http.close()

    def token(self) -> str:
        if self._token is None or time.time() > self._token_exp - 30:
            r = self._send("POST", "/v1/oauth/token", auth_header=False, data={
                "grant_type": "client_credentials", "client_id": self.creds.client_id,
                "client_secret": self.creds.client_secret})
            doc = r.json()
            self._token, self._token_exp = doc["access_token"], time.time() + float(doc.get("expires_in", 60))
        return self._token

    def _send(self, method: str, path: str, *, auth_header: bool = True, **kw) -> httpx.Response:
        headers = kw.pop("headers", {})
        if auth_header:
            headers["Authorization"] = f"Bearer {self.token()}"
        try:
            r = self.http.request(method, path, headers=headers, **kw)
        except httpx.HTTPError as exc:
            raise ServiceError(503, {"title": "Service Unavailable",
                                     "detail": f"cannot reach the sharing service at {self.creds.url}: {exc}"}) from exc
        if r.status_code >= 400:
            try:
                problem = r.json()
            except ValueError:
                problem = {"detail": r.text[:500]}
            if r.status_code == 429:
                problem.setdefault("retry_after", r.headers.get("Retry-After"))
            raise ServiceError(r.status_code, problem)
        return r

    def get(self, path: str) -> dict:
        return self._send("GET", path).json()

    def post(self, path: str, body: dict) -> dict:
        return self._send("POST", path, json=body).json()

    def query(self, sql: str, purpose: str, fmt: str = "json", limit: int | None | str = "default",
              timeout: float | None = None) -> httpx.Response:
        body: dict = {"sql": sql, "purpose": purpose, "format": fmt}
        if limit != "default":
            body["limit"] = limit
        if timeout is not None:
            body["timeout"] = timeout
        return self._send("POST", "/v1/query", json=body)
