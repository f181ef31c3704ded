"""Check-character algorithms and "how a system mangles it" helpers for the generator.

The algorithms are the ones in ``docs/standards.md`` (GB 11643 MOD 11-2, GB 32100 MOD 31 with the
GB 11714 organisation-code check). They live here so the generator does not depend on the
validation code it is meant to test.
"""

from __future__ import annotations

import datetime
import re
import unicodedata
from decimal import ROUND_HALF_UP, Decimal

# ---- GB 11643 resident ID number -------------------------------------------------------
ID_CHECK = "10X98765432"


def id_check_char(first17: str) -> str:
    # sum(d_k * 2^(18-k)) mod 11, computed as 2 * int(s, 13) because 13 = 2 (mod 11)
    return ID_CHECK[2 * int(first17, 13) % 11]


def id18(division: str, yyyymmdd: str, seq: int) -> str:
    s17 = f"{division}{yyyymmdd}{seq:03d}"
    return s17 + id_check_char(s17)


def id_to_legacy15(id_18: str) -> str:
    """The 1989 15-digit form: 2-digit year, no check character."""
    return id_18[:6] + id_18[8:17]


def upgrade15(id_15: str) -> str:
    s17 = id_15[:6] + "19" + id_15[6:]
    return s17 + id_check_char(s17)


def excel_mangle_zeros(id_18: str) -> str:
    """What Excel keeps of an 18-digit number: 15 significant digits, rounded, then zeros."""
    n = Decimal(int(id_18)).scaleb(-3).quantize(Decimal(1), rounding=ROUND_HALF_UP)
    return f"{int(n) * 1000:d}"


def excel_mangle_sci(id_18: str) -> str:
    """What Excel shows for an 18-digit number in a General cell: ``1.10105E+17``."""
    return f"{float(int(id_18)):.5E}"


# ---- GB 32100 unified social credit code ---------------------------------------------
USCC_CHARS = "0123456789ABCDEFGHJKLMNPQRTUWXY"
USCC_WEIGHTS = (1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28)
ORG_WEIGHTS = (3, 7, 9, 10, 5, 8, 4, 2)
_ORG_VALUES = {c: i for i, c in enumerate("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ")}


def uscc_check_char(first17: str) -> str:
    total = sum(USCC_CHARS.index(c) * w for c, w in zip(first17, USCC_WEIGHTS))
    return USCC_CHARS[(31 - total % 31) % 31]


def org_check_char(body8: str) -> str:
    c = 11 - sum(_ORG_VALUES[ch] * w for ch, w in zip(body8, ORG_WEIGHTS)) % 11
    return "X" if c == 10 else "0" if c == 11 else str(c)


def uscc(authority_category: str, division: str, org_body8: str) -> str:
    s17 = authority_category + division + org_body8 + org_check_char(org_body8)
    return s17 + uscc_check_char(s17)


# ---- what the spec says about a delivered ID / USCC value --------------------------------
PROVINCES = frozenset("11 12 13 14 15 21 22 23 31 32 33 34 35 36 37 41 42 43 44 45 46 50 51 52 "
                      "53 54 61 62 63 64 65 71 81 82".split())
_ID18 = re.compile(r"^\d{17}[\dX]$")
_ID15 = re.compile(r"^\d{15}$")


def _real_date(ymd: str, today: datetime.date) -> bool:
    try:
        d = datetime.date(int(ymd[:4]), int(ymd[4:6]), int(ymd[6:8]))
    except ValueError:
        return False
    return d <= today


def spec_id_reason(raw: str, today: datetime.date | None = None) -> str | None:
    """The quarantine rule a delivered ID value breaks per docs/standards.md §1 (None = valid)."""
    today = today or datetime.date.today()
    s = unicodedata.normalize("NFKC", raw).strip().replace("x", "X")
    if _ID15.match(s):
        if 996 <= int(s[12:15]) <= 999:
            return "id_number.legacy_centenarian"
        s = upgrade15(s)
    if not _ID18.match(s):
        return "id_number.format"
    if not _real_date(s[6:14], today):
        return "id_number.birth_date"
    if s[:2] not in PROVINCES:
        return "id_number.province"
    if id_check_char(s[:17]) != s[17]:
        return "id_number.check_digit"
    return None


# ---- text helpers ----------------------------------------------------------------------
_FULLWIDTH = {c: chr(ord(c) + 0xFEE0) for c in "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"}


def fullwidth(s: str, letters_only: bool = False) -> str:
    return "".join(_FULLWIDTH.get(c, c) if (not letters_only or c.isalpha()) else c for c in s)
