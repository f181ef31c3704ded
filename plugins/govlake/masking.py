"""Masking rules by data element, and keyed join tokens (docs/standards.md §6).

Masks (display restriction, 展示限制) keep a few characters and star the rest:

=============  ==========================================  ===========================
element        rule                                        example
=============  ==========================================  ===========================
id_number      keep 6 + 4 (internal) / 1 + 1 (outside)     110105********002X / 1****************X
phone          keep 3 + 4                                  138****5678
bank_card      keep 6 + 4                                  622202*********0123
name           surname + ``*``; keep last char if len ≥ 3  张* / 张*三 / 欧**明
address        keep through county/district, then ``****`` 北京市朝阳区****
email          keep first character + domain               z***@example.cn
birth_date     keep the year                               1990-**-**
=============  ==========================================  ===========================

Masked is not anonymous: masked values stay personal information.

Join tokens are keyed: ``"v1:" + HMAC-SHA256(K, normalise(value)).hex()`` (or
``"v1sm3:" + HMAC-SM3(…)`` when ``hashlib`` has SM3 and ``GOVLAKE_TOKEN_ALG`` is ``sm3`` or
``auto``). A plain hash of an ID number is brute-forceable and is never used. The key K comes
from ``GOVLAKE_TOKEN_KEY_FILE`` (a path) or ``GOVLAKE_TOKEN_KEY`` (hex), else from the local
key file ``.work/secrets/token.key`` that :func:`ensure_local_key` creates (mode 0600, never
committed: ``.work/`` is git-ignored).

The functions here are pure Python; the query entry point registers them as DuckDB UDFs in
its own connection (:func:`register_udfs`), so masked values are computed inside DuckDB and
a clear value never leaves it for a role below clearance.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
import stat
import unicodedata
from pathlib import Path
from typing import Callable

from govlake import config

TREATMENTS = ("clear", "mask", "token", "withhold", "generalize")

# Generalization (for aggregate-only roles: statistics without individuals), by data element.
# The rule itself is SQL, applied when renditions are made (govlake.sharing.renditions):
#   year    birth date -> its year ("1990")
#   county  address -> the county-level division it names (province/city/county, no street)
#   keep    a coarse code that is already a category (gender, ethnicity, marital status, division)
# Any other element is withheld.
GENERALIZATION = {
    "birth_date": "year",
    "address": "county",
    "gender_code": "keep",
    "ethnicity_code": "keep",
    "marital_status_code": "keep",
    "division_code": "keep",
    "household_status_code": "keep",
    "event_type": "keep",
    "credit_rating": "keep",
}

_ID_WEIGHTS = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2]
_ID_CHECK = "10X98765432"


class TokenKeyError(RuntimeError):
    """No usable join-token key."""


# ---- normalisation ------------------------------------------------------------------------
def _nfkc(value: str) -> str:
    return re.sub(r"\s+", "", unicodedata.normalize("NFKC", str(value)))


def id_check_digit(first17: str) -> str:
    return _ID_CHECK[sum(int(d) * w for d, w in zip(first17, _ID_WEIGHTS)) % 11]


def normalise_id_number(value: str) -> str:
    """18-digit upper-case form; a 15-digit ID is upgraded (insert ``19``, add check digit)."""
    v = _nfkc(value).upper()
    if len(v) == 15 and v.isdigit():
        first17 = v[:6] + "19" + v[6:]
        return first17 + id_check_digit(first17)
    return v


def normalise_phone(value: str) -> str:
    """A mobile number as ``std_phone`` (dbt_project/macros/standards/std_phone.sql, the rule of
    docs/standards.md §5) gives it: spaces, ``-`` and brackets ``( ) [ ]`` removed, then a leading
    +86/0086/86. Used only to mask values on the Python side; tests compare it with the macro."""
    v = re.sub(r"[\s\-()（）\[\]]", "", _nfkc(value))
    for prefix in ("+86", "0086", "86"):
        if v.startswith(prefix) and len(v) - len(prefix) == 11:
            return v[len(prefix):]
    return v


def normalise(element: str, value: str) -> str:
    if element in ("id_number", "legal_rep_id_number"):
        return normalise_id_number(value)
    if element == "phone":
        return normalise_phone(value)
    if element == "uscc":
        return _nfkc(value).upper()
    return _nfkc(value)


# ---- masks --------------------------------------------------------------------------------
def _keep(value: str, head: int, tail: int) -> str:
    n = len(value)
    if n <= head + tail:
        return "*" * n
    return value[:head] + "*" * (n - head - tail) + (value[n - tail:] if tail else "")


def mask_id_number(value: str, internal: bool = True) -> str:
    v = _nfkc(value).upper()
    return _keep(v, 6, 4) if internal else _keep(v, 1, 1)


def mask_phone(value: str, internal: bool = True) -> str:
    return _keep(normalise_phone(value), 3, 4)


def mask_bank_card(value: str, internal: bool = True) -> str:
    return _keep(_nfkc(value), 6, 4)


def mask_name(value: str, internal: bool = True) -> str:
    v = str(value).strip()
    if len(v) <= 1:
        return "*" * len(v)
    if len(v) == 2:
        return v[0] + "*"
    return v[0] + "*" * (len(v) - 2) + v[-1]


_ADMIN_CHARS = r"[^省市区县镇乡街路道村号巷弄栋楼室\d\s]"
_ADDRESS_RE = re.compile(
    rf"^(?:{_ADMIN_CHARS}{{2,8}}?(?:省|自治区|特别行政区))?"
    rf"(?:{_ADMIN_CHARS}{{1,10}}?(?:市|自治州|地区|盟))?"
    rf"(?:{_ADMIN_CHARS}{{1,10}}?(?:自治县|自治旗|林区|特区|区|县|市|旗))?"
)


def mask_address(value: str, internal: bool = True) -> str:
    """Keep province / city / county-district, then ``****``; nothing kept if unrecognised."""
    v = str(value).strip()
    m = _ADDRESS_RE.match(v)
    end = m.end() if m else 0
    return v[:end] + "****"


def mask_email(value: str, internal: bool = True) -> str:
    v = str(value).strip()
    if "@" not in v:
        return _keep(v, 1, 0)
    local, domain = v.rsplit("@", 1)
    return (local[:1] + "***" if local else "***") + "@" + domain


def mask_birth_date(value: str, internal: bool = True) -> str:
    v = str(value).strip()
    m = re.match(r"^(\d{4})", v)
    return f"{m.group(1)}-**-**" if m else "****"


def mask_uscc(value: str, internal: bool = True) -> str:
    return _keep(_nfkc(value).upper(), 8, 2)


def mask_generic(value: str, internal: bool = True) -> str:
    v = str(value)
    return _keep(v, 1, 1) if len(v) >= 4 else "*" * len(v)


MASKERS: dict[str, Callable[[str, bool], str]] = {
    "id_number": mask_id_number,
    "legal_rep_id_number": mask_id_number,
    "phone": mask_phone,
    "bank_card": mask_bank_card,
    "name": mask_name,
    "legal_rep_name": mask_name,
    "address": mask_address,
    "email": mask_email,
    "birth_date": mask_birth_date,
    "uscc": mask_uscc,
}



def default_treatment(element: str) -> str:
    """Above clearance and not configured otherwise: mask when a rule exists, else withhold."""
    return "mask" if element in MASKERS else "withhold"


def mask(element: str, value, internal: bool = True):
    if value is None:
        return None
    fn = MASKERS.get(element, mask_generic)
    return fn(str(value), internal)


# ---- keys and tokens ----------------------------------------------------------------------
def default_key_path() -> Path:
    return config.work_dir() / "secrets" / "token.key"


def _decode_key(text: str | bytes, where: str) -> bytes:
    raw = text.decode("ascii", "replace") if isinstance(text, bytes) else text
    raw = raw.strip()
    try:
        key = bytes.fromhex(raw)
    except ValueError as exc:
        raise TokenKeyError(f"{where}: the token key must be hex (64 hex digits)") from exc
    if len(key) < 16:
        raise TokenKeyError(f"{where}: the token key is {len(key)} bytes; at least 16 are needed")
    return key


def load_key() -> bytes:
    """The join-token key: $GOVLAKE_TOKEN_KEY_FILE, else $GOVLAKE_TOKEN_KEY, else the local file."""
    path = os.environ.get("GOVLAKE_TOKEN_KEY_FILE")
    if path:
        p = Path(path)
        if not p.is_file():
            raise TokenKeyError(f"GOVLAKE_TOKEN_KEY_FILE={path}: no such file")
        return _decode_key(p.read_text(encoding="ascii"), str(p))
    env = os.environ.get("GOVLAKE_TOKEN_KEY")
    if env:
        return _decode_key(env, "GOVLAKE_TOKEN_KEY")
    p = default_key_path()
    if p.is_file():
        return _decode_key(p.read_text(encoding="ascii"), str(p))
    raise TokenKeyError(
        "no join-token key: set GOVLAKE_TOKEN_KEY_FILE (a path outside the repository) or "
        f"GOVLAKE_TOKEN_KEY (hex), or create a local key with `make demo` ({p})")


def ensure_local_key(path: Path | None = None) -> Path:
    """Create a random 256-bit key file (mode 0600) if none exists; return its path.

    If GOVLAKE_TOKEN_KEY_FILE is set, that file is used (and created if missing)."""
    target = Path(path or os.environ.get("GOVLAKE_TOKEN_KEY_FILE") or default_key_path())
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, (secrets.token_hex(32) + "\n").encode("ascii"))
        os.fsync(fd)
    finally:
        os.close(fd)
    os.chmod(target, stat.S_IRUSR | stat.S_IWUSR)
    return target


def token_algorithm() -> str:
    """``sha256`` or ``sm3``: $GOVLAKE_TOKEN_ALG (sha256 | sm3 | auto; default auto)."""
    want = os.environ.get("GOVLAKE_TOKEN_ALG", "auto").lower()
    has_sm3 = "sm3" in hashlib.algorithms_available
    if want == "sm3":
        if not has_sm3:
            raise TokenKeyError("GOVLAKE_TOKEN_ALG=sm3 but this Python's hashlib has no SM3")
        return "sm3"
    if want == "sha256":
        return "sha256"
    return "sm3" if has_sm3 else "sha256"


_PREFIX = {"sha256": "v1:", "sm3": "v1sm3:"}


def _digestmod(alg: str):
    return hashlib.sha256 if alg == "sha256" else (lambda data=b"": hashlib.new("sm3", data))


def token(element: str, value, key: bytes, alg: str = "sha256"):
    """Keyed join token of a value (normalised for its data element); None stays None."""
    if value is None:
        return None
    msg = normalise(element, str(value)).encode("utf-8")
    return _PREFIX[alg] + hmac.new(key, msg, _digestmod(alg)).hexdigest()


def key_id(key: bytes) -> str:
    """A short, non-secret fingerprint of the key (recorded in the audit log)."""
    return hmac.new(key, b"govlake-token-key-id", hashlib.sha256).hexdigest()[:12]


# ---- DuckDB -------------------------------------------------------------------------------
MASK_UDF = "govlake_mask"
TOKEN_UDF = "govlake_token"


def register_udfs(con, key: bytes | None = None, alg: str | None = None) -> list[str]:
    """Register ``govlake_mask(element, value, internal)`` and (with a key)
    ``govlake_token(element, value)`` as scalar UDFs of a DuckDB connection."""
    names = []
    con.create_function(MASK_UDF, lambda e, v, i: mask(e, v, bool(i)),
                        ["VARCHAR", "VARCHAR", "BOOLEAN"], "VARCHAR", side_effects=False)
    names.append(MASK_UDF)
    if key is not None:
        a = alg or token_algorithm()
        con.create_function(TOKEN_UDF, lambda e, v: token(e, v, key, a),
                            ["VARCHAR", "VARCHAR"], "VARCHAR", side_effects=False)
        names.append(TOKEN_UDF)
    return names


def sql_literal(text: str) -> str:
    return "'" + str(text).replace("'", "''") + "'"


def sql_ident(name: str) -> str:
    return '"' + str(name).replace('"', '""') + '"'


def column_sql(column: str, element: str, treatment: str, internal: bool) -> str:
    """The SELECT expression that applies a treatment to a column (aliased to its name)."""
    col = sql_ident(column)
    if treatment == "clear":
        return col
    if treatment == "withhold":
        return f"CAST(NULL AS VARCHAR) AS {col}"
    if treatment == "mask":
        return (f"{MASK_UDF}({sql_literal(element)}, CAST({col} AS VARCHAR), "
                f"{'true' if internal else 'false'}) AS {col}")
    if treatment == "token":
        return f"{TOKEN_UDF}({sql_literal(element or column)}, CAST({col} AS VARCHAR)) AS {col}"
    raise ValueError(f"unknown treatment {treatment!r} for column {column!r} (one of {TREATMENTS})")
