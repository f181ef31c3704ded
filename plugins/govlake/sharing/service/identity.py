"""Registered clients of the sharing service and their credentials (OAuth2 client credentials).

A client is a department application, a named analyst, an approver or a citizen portal. Its
registration fixes who it is: the role (a role of the reviewed grants file), the department and
the person or system name. Nothing a caller sends can change them.

- Secrets are random (32 bytes, URL-safe), shown once at ``add``/``rotate`` and stored only as
  a salted scrypt hash in ``<state>/clients.sqlite`` (mode 0600, inside the service's private
  state folder). The repository holds no credential.
- ``POST /v1/oauth/token`` (``grant_type=client_credentials``) exchanges id + secret for a
  short-lived HS256 JWT (PyJWT). The token carries the client id and the secret generation
  (``gen``); every request re-reads the registration, so a rotation (new generation) or a
  revocation takes effect at once for tokens already issued.
- The JWT signing key is the service's own (``<secrets>/service-jwt.key``, 0600), distinct
  from the join-token key.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import os
import re
import secrets
import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import jwt

KINDS = ("app", "analyst", "approver", "citizen_portal", "admin")
ISSUER = "govlake-sharing-service"
AUDIENCE = "govlake"
_ID_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{2,63}$")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS clients (
    client_id    TEXT PRIMARY KEY,
    kind         TEXT NOT NULL,
    role         TEXT,
    department   TEXT NOT NULL,
    name         TEXT NOT NULL,
    secret_salt  BLOB NOT NULL,
    secret_hash  BLOB NOT NULL,
    generation   INTEGER NOT NULL,
    status       TEXT NOT NULL CHECK (status IN ('active', 'revoked')),
    created_at   TEXT NOT NULL,
    rotated_at   TEXT,
    revoked_at   TEXT,
    revoke_reason TEXT
);
"""


class IdentityError(ValueError):
    """A client cannot be registered, found or authenticated; the message says why."""


class AuthError(IdentityError):
    """Authentication failed (HTTP 401)."""


@dataclass(frozen=True)
class Client:
    client_id: str
    kind: str
    role: str | None
    department: str
    name: str
    generation: int
    status: str
    created_at: str
    rotated_at: str | None = None
    revoked_at: str | None = None

    @property
    def active(self) -> bool:
        return self.status == "active"

    def public(self) -> dict:
        return {"client_id": self.client_id, "kind": self.kind, "role": self.role,
                "department": self.department, "name": self.name, "status": self.status,
                "generation": self.generation, "created_at": self.created_at,
                "rotated_at": self.rotated_at, "revoked_at": self.revoked_at}


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def _hash_secret(secret: str, salt: bytes) -> bytes:
    # scrypt (RFC 7914), n=2**14 r=8 p=1: ~15 ms per check, only at token issue
    return hashlib.scrypt(secret.encode("utf-8"), salt=salt, n=2 ** 14, r=8, p=1, dklen=32)


def private_file(path: Path, nbytes: int = 32) -> bytes:
    """Read a secret key file, creating it (random, mode 0600, folder 0700) if missing."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path.parent, 0o700)
    if not path.exists():
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        else:
            try:
                os.write(fd, (secrets.token_hex(nbytes) + "\n").encode("ascii"))
                os.fsync(fd)
            finally:
                os.close(fd)
    return bytes.fromhex(path.read_text(encoding="ascii").strip())


class Registry:
    """The client registry (SQLite). Safe to use from several threads and processes."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.path.parent, 0o700)
        self._local = threading.local()
        con = self._con()
        with con:
            con.executescript(_SCHEMA)
        os.chmod(self.path, 0o600)

    def _con(self) -> sqlite3.Connection:
        con = getattr(self._local, "con", None)
        if con is None:
            con = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            con.execute("PRAGMA journal_mode=WAL")
            con.execute("PRAGMA busy_timeout=30000")
            self._local.con = con
        return con

    # ---- admin ---------------------------------------------------------------------------
    def add(self, client_id: str, *, kind: str, department: str, name: str,
            role: str | None = None) -> tuple[Client, str]:
        """Register a client; returns (client, secret). The secret is not stored."""
        if not _ID_RE.match(client_id or ""):
            raise IdentityError(f"client id {client_id!r}: use 3-64 characters a-z 0-9 _ . - "
                                "(starting with a letter or digit)")
        if kind not in KINDS:
            raise IdentityError(f"client {client_id}: kind {kind!r} is not one of {', '.join(KINDS)}")
        if not department or not name:
            raise IdentityError(f"client {client_id}: department and name are required")
        if kind in ("app", "analyst") and not role:
            raise IdentityError(f"client {client_id}: a {kind} needs --role (a role of the grants file)")
        secret = secrets.token_urlsafe(32)
        salt = secrets.token_bytes(16)
        con = self._con()
        try:
            con.execute("INSERT INTO clients (client_id, kind, role, department, name, secret_salt, "
                        "secret_hash, generation, status, created_at) VALUES (?,?,?,?,?,?,?,1,'active',?)",
                        (client_id, kind, role, department, name, salt, _hash_secret(secret, salt), _now()))
        except sqlite3.IntegrityError as exc:
            raise IdentityError(f"client {client_id} already exists (use rotate for a new secret)") from exc
        return self.get(client_id), secret

    def rotate(self, client_id: str) -> tuple[Client, str]:
        """A new secret; the old secret and every token issued with it stop working at once."""
        c = self.get(client_id)
        if not c.active:
            raise IdentityError(f"client {client_id} is revoked; register a new client instead")
        secret = secrets.token_urlsafe(32)
        salt = secrets.token_bytes(16)
        self._con().execute("UPDATE clients SET secret_salt=?, secret_hash=?, generation=generation+1, "
                            "rotated_at=? WHERE client_id=?",
                            (salt, _hash_secret(secret, salt), _now(), client_id))
        return self.get(client_id), secret

    def revoke(self, client_id: str, reason: str) -> Client:
        self.get(client_id)
        self._con().execute("UPDATE clients SET status='revoked', revoked_at=?, revoke_reason=? "
                            "WHERE client_id=?", (_now(), reason, client_id))
        return self.get(client_id)

    def list(self) -> list[Client]:
        rows = self._con().execute("SELECT client_id FROM clients ORDER BY client_id").fetchall()
        return [self.get(r[0]) for r in rows]

    def find(self, client_id: str) -> Client | None:
        row = self._con().execute(
            "SELECT client_id, kind, role, department, name, generation, status, created_at, "
            "rotated_at, revoked_at FROM clients WHERE client_id=?", (client_id,)).fetchone()
        return Client(*row) if row else None

    def get(self, client_id: str) -> Client:
        c = self.find(client_id)
        if c is None:
            raise IdentityError(f"no client {client_id!r}")
        return c

    # ---- authentication ------------------------------------------------------------------
    def check_secret(self, client_id: str, secret: str) -> Client:
        row = self._con().execute("SELECT secret_salt, secret_hash FROM clients WHERE client_id=?",
                                  (client_id,)).fetchone()
        # same work whether or not the client exists (no user enumeration by timing)
        salt, stored = row if row else (b"\0" * 16, b"\0" * 32)
        ok = hmac.compare_digest(_hash_secret(secret or "", salt), stored)
        c = self.find(client_id) if row else None
        if not ok or c is None:
            raise AuthError("invalid client credentials")
        if not c.active:
            raise AuthError(f"client {client_id} is revoked")
        return c


class TokenIssuer:
    """Short-lived HS256 bearer tokens (RFC 7519) for registered clients."""

    def __init__(self, key: bytes, ttl_seconds: int = 900):
        if len(key) < 32:
            raise IdentityError("the service's JWT key must be at least 32 bytes")
        self._key = key
        self.ttl = int(ttl_seconds)

    def issue(self, client: Client) -> dict:
        now = int(time.time())
        claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": client.client_id, "gen": client.generation,
                  "iat": now, "nbf": now, "exp": now + self.ttl, "jti": uuid.uuid4().hex}
        token = jwt.encode(claims, self._key, algorithm="HS256")
        return {"access_token": token, "token_type": "Bearer", "expires_in": self.ttl}

    def verify(self, token: str, registry: Registry) -> Client:
        try:
            claims = jwt.decode(token, self._key, algorithms=["HS256"], audience=AUDIENCE, issuer=ISSUER,
                                options={"require": ["exp", "iat", "sub", "aud", "iss"]})
        except jwt.ExpiredSignatureError as exc:
            raise AuthError("the bearer token has expired; request a new one") from exc
        except jwt.PyJWTError as exc:
            raise AuthError(f"invalid bearer token ({type(exc).__name__})") from exc
        c = registry.find(str(claims.get("sub")))
        if c is None:
            raise AuthError("the token's client is not registered")
        if not c.active:
            raise AuthError(f"client {c.client_id} is revoked")
        if claims.get("gen") != c.generation:
            raise AuthError(f"client {c.client_id}'s credentials were rotated; request a new token")
        return c
