"""Synthetic department deliveries: one delivery of each of the six feeds in ``docs/sources.md``.

``govlake generate --people N --date YYYY-MM-DD [--seed S] [--fault-rate X] [--truth DIR]``

How it stays consistent and small at 10 million people
------------------------------------------------------
* People are made in chunks of ``CHUNK`` consecutive indexes. Everything about person *i*
  (ID number, name, address, marriages, children, insurance) comes from random streams seeded
  by ``(seed, stream, chunk)``, so person *i* can be regenerated from its chunk alone and the
  whole pool is never held in memory. All six files are written in one pass over the chunks.
* ID numbers must be unique. A first, vectorised pass computes only the (division, birth date,
  sequence) key of every person (8 bytes each), finds the rare collisions and gives the later
  person another sequence number; that override map is all that is kept.
* Spouses are paired inside blocks of ``BLOCK`` people, so a marriage's two people, their
  events and their newborns live in the same chunk; companies are spread over the chunks and
  take their legal representatives from the chunk they belong to. An employer's USCC is a pure
  function of (seed, company index), so social insurance can name any company.
* The population, its life events and companies live on a fixed timeline (births up to
  2025-12-31, events up to 2030-12-31); a delivery for a date shows the state at that date.
  Incremental feeds (marriage, birth certificates) carry the whole history up to the date on
  their first delivery, and only what happened since the previous delivery date found in the
  landing zone afterwards.

Faults
------
Each feed gets the faults ``docs/sources.md`` lists for it, plus a small rate of faults nobody wrote
down, scaled by ``fault_rate`` (1.0 = the realistic default, 0 = clean). Documented format
quirks that the standards repair (15-digit IDs, full-width digits, ``+86`` phones, JSON numbers,
Excel serial dates, ...) leave the row valid; anything else makes the row invalid with exactly
one reason (one fault per invalid row). About 8% of the people with marriage-registry events
(~3% of everyone) get a household 婚姻状况 that disagrees with their events, whatever the fault
rate: that is what the marriage/household cross-check exists to find.

Ground truth (``truth_dir``)
----------------------------
``<truth_dir>/<dept>/<dataset>.parquet``: one row per delivered data row: ``_source_file``
(relative to the landing root), ``_row_number`` (1-based, header excluded), ``valid``,
``reason`` (quarantine rule code), ``column`` (the delivered column the rule is reported on:
the ID column for ``id_number.*`` format/date/check faults, the birth-date or gender column for
``id_number.birth_mismatch`` / ``id_number.gender_mismatch``, none for ``row.duplicate``), then
one string column per data element with the standardized value (null when the row is invalid
or the value empty; 婚姻状况 empty is '90'; decimals as DECIMAL(18,4) text).
``<truth_dir>/marriage_household_check.parquet``: id_number, household_status_code,
derived_status_code of every person the cross-check must report (computed from valid rows only).
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import json
import os
import random
import sys
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

from govlake import metadata
from govlake_synth import codes
from govlake_synth import data as D
from govlake.storage import Lake

CHUNK = 4096  # people per chunk (a multiple of BLOCK)
BLOCK = 32  # spouses are paired inside blocks of this many consecutive people
BIRTH_MAX = dt.date(2025, 12, 31).toordinal()
TIMELINE_END = dt.date(2030, 12, 31).toordinal()
REGISTRY_START = dt.date(1990, 1, 1).toordinal()  # marriage registry digitised from here
BIRTH_CERT_START = dt.date(2020, 1, 1).toordinal()  # birth-certificate system from here
HOUSEHOLD_SYSTEM_START = dt.date(1985, 1, 1).toordinal()
_SI_START = dt.date(1995, 1, 1).toordinal()  # social insurance records kept from here
COMPANY_START = dt.date(1985, 1, 1).toordinal()
YEAR = 365.2425
MISMATCH_SHARE = 0.08  # of people with registry events: household status deliberately disagrees

HOUSEHOLD = "public_security.household_registration"
MARRIAGE = "civil_affairs.marriage_registration"
SOCIAL = "human_resources.social_insurance"
TAX = "tax.taxpayer_registration"
ENTERPRISE = "market_regulation.enterprise_registration"
BIRTH = "health.birth_certificate"
FEEDS = (HOUSEHOLD, MARRIAGE, SOCIAL, TAX, ENTERPRISE, BIRTH)

# Invalid-row faults per feed: (fault, rate at fault_rate 1.0). One is drawn per row at most.
INVALID_FAULTS = {
    HOUSEHOLD: [("id_check", 0.005), ("birth_mismatch", 0.004), ("gender_mismatch", 0.003),
                ("gender_unmapped", 0.002), ("phone", 0.004), ("date", 0.003)],
    MARRIAGE: [("excel", 0.015), ("id_check", 0.003), ("id_feb31", 0.002), ("date", 0.003)],
    SOCIAL: [("id_check", 0.003), ("id_feb31", 0.002), ("gender_mismatch", 0.003),
             ("gender_unmapped", 0.002), ("month", 0.003)],
    TAX: [("hand_typed", 0.01), ("check_char", 0.003), ("org_code", 0.002), ("date", 0.003),
          ("rep_id_check", 0.003)],
    ENTERPRISE: [("check_char", 0.003), ("org_code", 0.002), ("date", 0.003), ("decimal", 0.003),
                 ("status", 0.002), ("rep_id_check", 0.003)],
    BIRTH: [("mother_check", 0.004), ("mother_feb31", 0.002), ("gender_unmapped", 0.003),
            ("date", 0.003)],
}
# Documented quirks that stay valid (rates at fault_rate 1.0).
LEGACY15_OLD = 0.06  # household: people born before 1985 still carrying a 15-digit number
CENTENARIAN_LEGACY = 0.5  # household: 996-999 centenarians carrying the 15-digit number
FULLWIDTH_ID = 0.01
TRAILING_SPACE_ID = 0.02
LOWER_X = 0.3
PHONE_MESSY = 0.08
DOT_VARIANT = 0.15
ZERO_WIDTH_NAME = 0.003
SI_ID_NUMBER = 0.03
SI_MONTH_NUMBER = 0.05
SI_DUPLICATE = 0.01
TAX_FULLWIDTH = 0.02
EXCEL_SERIAL = 0.05
FATHER_EMPTY = 0.05  # married parents, father's ID left empty anyway


# ====================================================================================
# small helpers
# ====================================================================================
def _seed(*parts) -> int:
    h = hashlib.blake2b("|".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(h, "big")


def _rng(*parts) -> random.Random:
    return random.Random(_seed(*parts))


@lru_cache(maxsize=65536)
def _ymd(o: int) -> tuple[int, int, int]:
    d = dt.date.fromordinal(o)
    return d.year, d.month, d.day


def _iso(o: int) -> str:
    y, m, d = _ymd(o)
    return f"{y:04d}-{m:02d}-{d:02d}"


def _compact(o: int) -> str:
    y, m, d = _ymd(o)
    return f"{y:04d}{m:02d}{d:02d}"


def _add_years(o: int, years: float) -> int:
    return o + int(years * YEAR)


_BAD_DAYS = [(2, 30), (2, 31), (4, 31), (6, 31), (9, 31), (11, 31), (13, 1), (0, 10)]


def _bad_ymd(r: random.Random, year: int) -> tuple[int, int, int]:
    m, d = r.choice(_BAD_DAYS)
    return year, m, d


def _pick(r: random.Random, seq):
    """r.choice without its rejection sampling (a third of the cost; plenty uniform here)."""
    return seq[int(r.random() * len(seq))]


def _pick_fault(r: random.Random, table, f: float) -> str | None:
    u = r.random()
    acc = 0.0
    for name, rate in table:
        acc += rate * f
        if u < acc:
            return name
    return None


def _messy_name(r: random.Random, name: str, f: float) -> str:
    """A name as some system keyed it: middle-dot variants, a stray zero-width space."""
    if D.DOT_STANDARD in name and r.random() < DOT_VARIANT * f:
        name = name.replace(D.DOT_STANDARD, r.choice(D.DOT_VARIANTS))
    if r.random() < ZERO_WIDTH_NAME * f and len(name) > 1:
        k = r.randrange(1, len(name))
        name = name[:k] + D.ZERO_WIDTH + name[k:]
    return name


def _wrong_check(r: random.Random, id_18: str) -> str:
    c = r.choice([x for x in codes.ID_CHECK if x != id_18[17]])
    return id_18[:17] + c


def _feb31(r: random.Random, id_18: str) -> str:
    m, d = r.choice([(2, 30), (2, 31), (4, 31), (6, 31), (9, 31), (11, 31)])
    s17 = f"{id_18[:10]}{m:02d}{d:02d}{id_18[14:17]}"
    return s17 + codes.id_check_char(s17)


def _bad_phone(r: random.Random, phone: str) -> str:
    k = r.randrange(4)
    if k == 0:
        return phone[:-1]  # 10 digits
    if k == 1:
        return phone + str(r.randrange(10))  # 12 digits
    if k == 2:
        return "12" + phone[2:]  # no such block
    return f"0{r.randint(10, 999)}-{r.randint(2000000, 8999999)}"  # a landline


def _messy_phone(r: random.Random, p: str) -> str:
    k = r.randrange(5)
    if k == 0:
        return f"+86 {p[:3]} {p[3:7]} {p[7:]}"
    if k == 1:
        return f"+86{p}"
    if k == 2:
        return f"{p[:3]}-{p[3:7]}-{p[7:]}"
    if k == 3:
        return f"{p[:3]} {p[3:7]} {p[7:]}"
    return f"+86-{p}"


# ====================================================================================
# the people
# ====================================================================================
def _year_weights() -> tuple[np.ndarray, np.ndarray]:
    years = np.arange(1920, 2026)
    w = np.empty(len(years))
    for i, y in enumerate(years):
        if y < 1940:
            w[i] = 0.05 + 0.5 * (y - 1920) / 20
        elif y < 1950:
            w[i] = 0.7
        elif y < 1962:
            w[i] = 1.0
        elif y < 1976:
            w[i] = 1.6
        elif y < 1985:
            w[i] = 1.15
        elif y < 1992:
            w[i] = 1.5
        elif y < 2016:
            w[i] = 1.0
        else:
            w[i] = 0.75
    return years, w / w.sum()


_YEARS, _YEAR_P = _year_weights()
_EPOCH = np.datetime64("1970-01-01", "D")
_ORD_1970 = dt.date(1970, 1, 1).toordinal()


def _core(seed: int, c: int, n: int) -> dict[str, np.ndarray]:
    """Vectorised identity core of chunk c: gender, birth date, division, sequence, key."""
    g = np.random.default_rng([_seed(seed, "core") & 0xFFFFFFFF, c])
    male = g.random(n) < 0.51
    year = g.choice(_YEARS, size=n, p=_YEAR_P)
    jan1 = (year - 1970).astype("datetime64[Y]").astype("datetime64[D]")
    ylen = np.where((year % 4 == 0) & ((year % 100 != 0) | (year % 400 == 0)), 366, 365)
    day = jan1 + (g.random(n) * ylen).astype(np.int64)
    div_r = g.random(n)
    div = np.where(year < 1984, div_r * D.DIV_N_ALWAYS, div_r * D.DIV_N_ALL).astype(np.int64)
    k = g.integers(0, 497, n)
    seq = np.where(male, 2 * k + 1, 2 * k + 2)
    cent = (year <= 1925) & (g.random(n) < 0.3)
    cseq = g.integers(0, 2, n)
    seq = np.where(cent, np.where(male, 997 + 2 * cseq, 996 + 2 * cseq), seq)
    ym = day.astype("datetime64[M]")
    yyyymmdd = (year * 10000 + (ym.astype(np.int64) % 12 + 1) * 100
                + (day - ym.astype("datetime64[D]")).astype(np.int64) + 1)
    divcode = np.array(D.DIV_CODES, dtype=np.int64)[div]
    key = divcode * 10**11 + yyyymmdd * 1000 + seq
    ordinal = (day - _EPOCH).astype(np.int64) + _ORD_1970
    return {"male": male, "ordinal": ordinal, "ymd": yyyymmdd, "div": div, "seq": seq, "key": key}


def _resolve_collisions(seed: int, people: int, progress) -> dict[int, int]:
    """Pass 1: find people whose ID key repeats an earlier person's; give them a new sequence."""
    n_chunks = -(-people // CHUNK)
    keys = np.empty(people, dtype=np.int64)
    for c in range(n_chunks):
        n = min(CHUNK, people - c * CHUNK)
        keys[c * CHUNK:c * CHUNK + n] = _core(seed, c, n)["key"]
        progress(0)
    order = np.argsort(keys, kind="stable")
    sk = keys[order]
    dup = order[1:][sk[1:] == sk[:-1]]
    del order
    overrides: dict[int, int] = {}
    used: set[int] = set()
    for i in sorted(int(x) for x in dup):
        base = int(keys[i]) // 1000 * 1000
        old = int(keys[i]) % 1000
        r = _rng(seed, "dup", i)
        while True:
            seq = 2 * r.randrange(497) + (1 if old % 2 else 2)
            k = base + seq
            j = int(np.searchsorted(sk, k))
            if (j >= len(sk) or sk[j] != k) and k not in used:
                break
        used.add(k)
        overrides[i] = seq
    return overrides


@dataclass(slots=True, eq=False)
class _Person:
    idx: int
    male: bool
    birth: int
    ymd: str
    div: int
    seq: int
    id: str
    name: str = ""
    given: str = ""  # the part a child's dotted name takes from its father
    eth: int = 0
    eth_text: str = ""
    phone: str = ""
    address: str = ""
    reg: int = 0
    u_status: float = 0.0  # picks 已婚 vs 初婚/再婚/复婚 wording
    u_single: float = 0.0  # status of people without marriage in the pool
    mismatch: bool = False
    paired: bool = False
    nuid: int = 0  # registry events numbered per husband: uid = idx * 8 + nuid
    status_tl: list = field(default_factory=list)  # [(ordinal, kind)], kind first/re/again/div
    events: list = field(default_factory=list)  # registry events this person is party to
    marriages: list = field(default_factory=list)  # [(start, end, spouse)]


@dataclass(slots=True, eq=False)
class _Event:
    date: int
    kind: str  # 结婚 / 离婚 / 补发结婚证
    h: _Person
    w: _Person
    uid: int
    row: list | None = None
    truth: list | None = None
    reason: str | None = None
    column: str | None = None


def _person_name(r: random.Random, male: bool, eth: str, rare: bool) -> tuple[str, str]:
    if eth in D.DOTTED_ETHNICITIES:
        own = r.choice(D.DOTTED_MALE if male else D.DOTTED_FEMALE)
        return own + D.DOT_STANDARD + r.choice(D.DOTTED_MALE), own
    surname = D.SURNAMES[D.pick_cum(D.SURNAME_CUM, r.random())]
    if rare:
        given = r.choice(D.RARE_CHARS)
    elif r.random() < 0.4:
        given = _pick(r, D.GIVEN_MALE if male else D.GIVEN_FEMALE)
    else:
        pool = D.GIVEN_MALE_1 if male else D.GIVEN_FEMALE_1
        given = _pick(r, pool) + _pick(r, pool)
    return surname + given, given


def _address(r: random.Random, div: int) -> str:
    u = r.random
    roots, nr = D.STREET_ROOTS, len(D.STREET_ROOTS)
    street = (f"{roots[int(u() * nr)]}{D.STREET_SUFFIXES[int(u() * len(D.STREET_SUFFIXES))]}"
              f"{1 + int(u() * 999)}号")
    if u() < 0.6:
        street += (f"{roots[int(u() * nr)]}{D.COMMUNITY_SUFFIXES[int(u() * len(D.COMMUNITY_SUFFIXES))]}"
                   f"{1 + int(u() * 30)}栋{1 + int(u() * 6)}单元{1 + int(u() * 30)}0{1 + int(u() * 4)}室")
    return D.DIV_PLACE[div] + street


def _people_chunk(seed: int, c: int, n: int, overrides: dict[int, int]) -> list[_Person]:
    core = _core(seed, c, n)
    r = _rng(seed, "person", c)
    out = []
    base = c * CHUNK
    male_a, ord_a, ymd_a, div_a, seq_a = (core["male"].tolist(), core["ordinal"].tolist(),
                                           core["ymd"].tolist(), core["div"].tolist(),
                                           core["seq"].tolist())
    for j in range(n):
        i = base + j
        seq = overrides.get(i, seq_a[j])
        div = div_a[j]
        ymd = str(ymd_a[j])
        p = _Person(i, male_a[j], ord_a[j], ymd, div, seq, codes.id18(D.DIV_CODES[div], ymd, seq))
        cum = D.ETH_CUM_XJ if D.DIV_CODES[div].startswith("65") else D.ETH_CUM
        p.eth = D.pick_cum(cum, r.random())
        ename = D.ETH_NAMES[p.eth]
        u = r.random()
        p.eth_text = "" if u < 0.005 else ename if u < 0.055 else ename + "族"
        p.name, p.given = _person_name(r, p.male, D.ETH_CODES[p.eth], r.random() < 0.002)
        if r.random() < 0.9:
            p.phone = _pick(r, D.MOBILE_PREFIXES) + f"{int(r.random() * 10**8):08d}"
        p.address = _address(r, div)
        if p.birth >= HOUSEHOLD_SYSTEM_START:
            p.reg = p.birth + 1 + int(r.random() * 60)
        else:
            p.reg = HOUSEHOLD_SYSTEM_START + int(r.random() * 8 * 365)
        p.u_status = r.random()
        p.u_single = r.random()
        p.mismatch = r.random() < MISMATCH_SHARE
        out.append(p)
    return out


def _legal(p: _Person) -> int:
    return _add_years(p.birth, 22 if p.male else 20)


def _new_event(date: int, kind: str, h: _Person, w: _Person, events: list) -> _Event:
    e = _Event(date, kind, h, w, h.idx * 8 + h.nuid)
    h.nuid += 1
    events.append(e)
    h.events.append(e)
    w.events.append(e)
    return e


def _marry(h: _Person, w: _Person, date: int, kind_h: str, kind_w: str, events: list) -> _Event | None:
    h.status_tl.append((date, kind_h))
    w.status_tl.append((date, kind_w))
    h.marriages.append([date, TIMELINE_END + 1, w])
    w.marriages.append([date, TIMELINE_END + 1, h])
    if date < REGISTRY_START:
        return None
    return _new_event(date, "结婚", h, w, events)


def _divorce(h: _Person, w: _Person, date: int, events: list) -> None:
    h.status_tl.append((date, "div"))
    w.status_tl.append((date, "div"))
    h.marriages[-1][1] = date
    w.marriages[-1][1] = date
    _new_event(date, "离婚", h, w, events)


def _maybe_reissue(r: random.Random, m: _Event | None, until: int, events: list) -> None:
    if m is None or r.random() >= 0.06:
        return
    lo, hi = m.date + 30, min(until, TIMELINE_END + 1) - 30
    if hi <= lo:
        return
    _new_event(r.randint(lo, hi - 1), "补发结婚证", m.h, m.w, events)


def _pair_block(r: random.Random, block: list[_Person]) -> list[_Event]:
    """Marriages, divorces, remarriages and reissues among the people of one block."""
    events: list[_Event] = []
    males = [p for p in block if p.male and _legal(p) < TIMELINE_END]
    females = [p for p in block if not p.male and _legal(p) < TIMELINE_END]
    r.shuffle(males)
    for h in males:
        if r.random() > 0.88 or h.paired:  # h may already have married a divorcée
            continue
        cands = [w for w in females if not w.paired and abs(w.birth - h.birth) <= 10 * 365]
        if not cands:
            continue
        w = r.choice(cands)
        m1 = max(_legal(h), _legal(w)) + int(r.expovariate(1 / (4 * 365)))
        if m1 > TIMELINE_END:
            continue
        h.paired = w.paired = True
        e1 = _marry(h, w, m1, "first", "first", events)
        end = TIMELINE_END + 1
        if r.random() < 0.18:
            d = m1 + r.randint(365, 20 * 365)
            if REGISTRY_START <= d <= TIMELINE_END:
                _maybe_reissue(r, e1, d, events)
                _divorce(h, w, d, events)
                u = r.random()
                if u < 0.15:
                    again = d + r.randint(180, 5 * 365)
                    if again <= TIMELINE_END:
                        e2 = _marry(h, w, again, "again", "again", events)
                        _maybe_reissue(r, e2, end, events)
                elif u < 0.5:
                    cands = [x for x in females if not x.paired and abs(x.birth - h.birth) <= 12 * 365]
                    if cands:
                        w2 = r.choice(cands)
                        t = max(d + r.randint(180, 8 * 365), _legal(w2) + r.randint(0, 3 * 365))
                        if t <= TIMELINE_END:
                            w2.paired = True
                            e2 = _marry(h, w2, t, "re", "first", events)
                            _maybe_reissue(r, e2, end, events)
                elif u < 0.85:
                    cands = [x for x in males if not x.paired and x is not h
                             and abs(x.birth - w.birth) <= 12 * 365]
                    if cands:
                        h2 = r.choice(cands)
                        t = max(d + r.randint(180, 8 * 365), _legal(h2) + r.randint(0, 3 * 365))
                        if t <= TIMELINE_END:
                            h2.paired = True
                            e2 = _marry(h2, w, t, "first", "re", events)
                            _maybe_reissue(r, e2, end, events)
                continue
        _maybe_reissue(r, e1, end, events)
    return events


# ====================================================================================
# company pool
# ====================================================================================
_B31 = codes.USCC_CHARS


@lru_cache(maxsize=262144)
def _company_core(seed: int, k: int) -> tuple[str, str, int, str, int]:
    """(kind both|ent|tax, authority+category, division index, USCC, established ordinal)."""
    h = hashlib.blake2b(f"{seed}|co|{k}".encode(), digest_size=32).digest()
    u = [int.from_bytes(h[i:i + 4], "big") / 2**32 for i in range(0, 32, 4)]
    kind = "both" if u[0] < 0.88 else "ent" if u[0] < 0.94 else "tax"
    if kind == "tax":
        prefix = "12" if u[1] < 0.5 else "51" if u[1] < 0.75 else "52"
    else:
        prefix = "91" if u[1] < 0.85 else "92" if u[1] < 0.95 else "93"
    div = int(u[2] * D.DIV_N_ALL)
    est = COMPANY_START + int((u[3] ** 0.6) * (TIMELINE_END - COMPANY_START))
    if prefix[0] == "9" and _ymd(est)[0] >= 2015:
        x = (k * 442_009_667 + _seed(seed, "ma")) % 31**6
        tail = ""
        for _ in range(6):
            x, d = divmod(x, 31)
            tail = _B31[d] + tail
        body = "MA" + tail
    else:
        body = f"{(k * 61_046_777 + _seed(seed, 'org')) % 10**8:08d}"
    return kind, prefix, div, codes.uscc(prefix, D.DIV_CODES[div], body), est


def _n_companies(people: int) -> int:
    return max(8, people // 20)


# ====================================================================================
# output
# ====================================================================================
class _Feed:
    """One delivered file plus (optionally) its ground-truth Parquet, written as rows come."""

    FLUSH = 50_000

    def __init__(self, lake: Lake, ds: metadata.Dataset, date: str, truth_dir: Path | None):
        self.ds = ds
        ext = "jsonl" if ds.format == "jsonl" else "csv"
        folder = lake.landing(ds.dept, ds.name, date)
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / f"{ds.name}_{date.replace('-', '')}.{ext}"
        self.rel = self.path.relative_to(lake.landing_root).as_posix()
        self.tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        self.fh = open(self.tmp, "w", encoding=ds.encoding, newline="")
        self.writer = None
        if ext == "csv":
            term = "\r\n" if ds.encoding == "utf-8-sig" else "\n"
            self.writer = csv.writer(self.fh, lineterminator=term)
            self.writer.writerow(ds.column_names)
        self.rows = 0
        self.invalid = 0
        self.elements = [c.element for c in ds.columns]
        self.truth_path = truth_dir / ds.dept / f"{ds.name}.parquet" if truth_dir else None
        self._pq = None
        self._buf: list[tuple] = []

    def add(self, row, truth: list | None, reason: str | None = None, column: str | None = None):
        """row: list of delivered strings (CSV) or a ready JSON line (JSONL)."""
        if self.writer is not None:
            self.writer.writerow(row)
        else:
            self.fh.write(row)
            self.fh.write("\n")
        self.rows += 1
        valid = reason is None
        if not valid:
            self.invalid += 1
        if self.truth_path is not None:
            self._buf.append((self.rows, valid, reason, column, truth if valid else None))
            if len(self._buf) >= self.FLUSH:
                self._flush()

    def _flush(self):
        import pyarrow as pa
        import pyarrow.parquet as pq

        if not self._buf:
            return
        n = len(self._buf)
        cols = {
            "_source_file": pa.array([self.rel] * n, pa.string()),
            "_row_number": pa.array([b[0] for b in self._buf], pa.int64()),
            "valid": pa.array([b[1] for b in self._buf], pa.bool_()),
            "reason": pa.array([b[2] for b in self._buf], pa.string()),
            "column": pa.array([b[3] for b in self._buf], pa.string()),
        }
        for k, el in enumerate(self.elements):
            cols[el] = pa.array([(b[4][k] or None) if b[4] is not None else None for b in self._buf],
                                pa.string())
        table = pa.table(cols)
        if self._pq is None:
            self.truth_path.parent.mkdir(parents=True, exist_ok=True)
            self._pq = pq.ParquetWriter(self.truth_path, table.schema)
        self._pq.write_table(table)
        self._buf.clear()

    def close(self):
        self.fh.close()
        os.replace(self.tmp, self.path)
        if self.truth_path is not None:
            self._flush()
            if self._pq is None:  # empty delivery: still write an (empty) truth file
                import pyarrow as pa
                import pyarrow.parquet as pq

                schema = pa.schema([("_source_file", pa.string()), ("_row_number", pa.int64()),
                                    ("valid", pa.bool_()), ("reason", pa.string()),
                                    ("column", pa.string())]
                                   + [(e, pa.string()) for e in self.elements])
                self.truth_path.parent.mkdir(parents=True, exist_ok=True)
                pq.write_table(schema.empty_table(), self.truth_path)
            else:
                self._pq.close()

    def abort(self):
        self.fh.close()
        if self.tmp.exists():
            self.tmp.unlink()
        if self._pq is not None:
            self._pq.close()


class _CheckWriter:
    def __init__(self, truth_dir: Path | None):
        self.path = truth_dir / "marriage_household_check.parquet" if truth_dir else None
        self.rows: list[tuple[str, str, str]] = []

    def add(self, id_number: str, household: str, derived: str):
        if self.path is not None:
            self.rows.append((id_number, household, derived))

    def close(self):
        if self.path is None:
            return
        import pyarrow as pa
        import pyarrow.parquet as pq

        self.path.parent.mkdir(parents=True, exist_ok=True)
        t = pa.table({k: pa.array([r[i] for r in self.rows], pa.string()) for i, k in
                      enumerate(("id_number", "household_status_code", "derived_status_code"))})
        pq.write_table(t, self.path)


# ====================================================================================
# the generator
# ====================================================================================
@dataclass
class _Ctx:
    seed: int
    people: int
    date: int  # delivery date ordinal
    f: float
    since: dict[str, int | None]  # incremental feeds: previous delivery date
    n_companies: int
    n_chunks: int
    feeds: dict[str, _Feed]
    check: _CheckWriter


def _age(p: _Person, on: int) -> float:
    return (on - p.birth) / YEAR


def _household(ctx: _Ctx, people: list[_Person], r: random.Random,
               r_sub: random.Random) -> dict[int, tuple[bool, str]]:
    """Writes household rows; returns idx -> (row valid, standardized marital code).

    ``r`` decides which person gets which fault (the same draws whatever the date); ``r_sub``
    picks the details (which wrong character, ...).
    """
    feed = ctx.feeds[HOUSEHOLD]
    cols = feed.ds.column_names
    f, D_ = ctx.f, ctx.date
    out: dict[int, tuple[bool, str]] = {}
    table = INVALID_FAULTS[HOUSEHOLD]
    for p in people:
        # draws happen for every person so a person's faults do not depend on the date
        fault = _pick_fault(r, table, f)
        u_leg, u_fw, u_sp, u_x, u_ph = r.random(), r.random(), r.random(), r.random(), r.random()
        if p.birth > D_:
            continue
        status = _marital_text(p, D_)
        centenarian = p.seq >= 996
        if centenarian and u_leg < CENTENARIAN_LEGACY * f:
            fault = "centenarian"
        sex = "男" if p.male else "女"
        birth = p.ymd
        phone = p.phone
        reg = _compact(min(p.reg, D_))
        id_out = p.id
        reason = column = None
        if fault == "id_check":
            id_out = _wrong_check(r_sub, p.id)
            reason, column = "id_number.check_digit", cols[0]
        elif fault == "birth_mismatch":
            birth = _compact(p.birth - r_sub.randint(1, 400))  # never a future date
            reason, column = "id_number.birth_mismatch", cols[4]
        elif fault == "gender_mismatch":
            sex = "女" if p.male else "男"
            reason, column = "id_number.gender_mismatch", cols[2]
        elif fault == "gender_unmapped":
            sex = r_sub.choice(["3", "?", "X"])
            reason, column = "code.unmapped", cols[2]
        elif fault == "phone" and phone:
            phone = _bad_phone(r_sub, phone)
            reason, column = "phone.format", cols[8]
        elif fault == "date":
            y, m, d = _bad_ymd(r_sub, _ymd(p.reg)[0])
            reg = f"{y:04d}{m:02d}{d:02d}"
            reason, column = "date.invalid", cols[9]
        elif fault == "centenarian":
            id_out = codes.id_to_legacy15(p.id)
            reason, column = "id_number.legacy_centenarian", cols[0]
        name = p.name
        if reason is None:
            # documented quirks that the standards repair
            if p.ymd < "19850101" and not centenarian and u_leg < LEGACY15_OLD * f:
                id_out = codes.id_to_legacy15(p.id)
            if u_x < LOWER_X * f:
                id_out = id_out.replace("X", "x")
            if u_fw < FULLWIDTH_ID * f:
                id_out = codes.fullwidth(id_out)
            if u_sp < TRAILING_SPACE_ID * f:
                id_out += " " * r_sub.randint(1, 3)
            if phone and u_ph < PHONE_MESSY * f:
                phone = _messy_phone(r_sub, phone)
            name = _messy_name(r_sub, name, f)
        row = [id_out, name, sex, p.eth_text, birth, p.address, D.DIV_CODES[p.div], status, phone, reg]
        mcode = D.MARITAL_CODES[status]
        truth = None
        if reason is None:
            truth = [p.id, p.name, "1" if p.male else "2",
                     D.ETH_CODES[p.eth] if p.eth_text else None, _iso(p.birth), p.address,
                     D.DIV_CODES[p.div], mcode, p.phone or None, _iso(min(p.reg, D_))]
        feed.add(row, truth, reason, column)
        out[p.idx] = (reason is None, mcode)
    return out


def _true_kind(p: _Person, on: int) -> str | None:
    kind = None
    for d, k in p.status_tl:
        if d <= on:
            kind = k
    return kind


def _marital_text(p: _Person, on: int) -> str:
    kind = _true_kind(p, on)
    has_events = any(e.date <= on and e.kind != "补发结婚证" for e in p.events)
    if kind is None:
        if _age(p, on) >= 70 and p.u_single < 0.35:
            text = "丧偶"
        elif _age(p, on) >= 28 and p.u_single > 0.45:
            text = "已婚"  # married before either registry, or to someone outside the pool
        elif p.u_single < 0.02 and not has_events:
            text = ""
        else:
            text = "未婚"
    elif kind == "div":
        text = "离婚"
    else:
        word = {"first": "初婚", "re": "再婚", "again": "复婚"}[kind]
        text = "已婚" if p.u_status < 0.6 else word
    if p.mismatch and has_events:
        u = p.u_status
        if kind == "div":
            text = "已婚" if u < 0.7 else "未婚"
        elif kind is not None:
            text = "未婚" if u < 0.5 else "离婚" if u < 0.85 else "丧偶"
    return text


def _marriage_rows(ctx: _Ctx, events: list[_Event]) -> None:
    """Decide each registry event's delivered row and truth (per-event random stream)."""
    f = ctx.f
    cols = ctx.feeds[MARRIAGE].ds.column_names
    table = INVALID_FAULTS[MARRIAGE]
    for e in events:
        if e.date > ctx.date:
            continue
        r = _rng(ctx.seed, "mevent", e.uid)
        fault = _pick_fault(r, table, f)
        y, m, d = _ymd(e.date)
        date_s = f"{y}年{m}月{d}日" if r.random() < 0.55 else f"{y:04d}-{m:02d}-{d:02d}"
        hid, wid = e.h.id, e.w.id
        reason = column = None
        side = r.randrange(2)
        if fault == "excel":
            # the first side whose number Excel can mangle detectably
            for s in (side, 1 - side):
                orig = (hid, wid)[s]
                if orig[-1] == "X":
                    continue  # Excel keeps a number ending in X as text
                zeros = codes.excel_mangle_zeros(orig)
                if r.random() < 0.6 and codes.spec_id_reason(zeros) == "id_number.check_digit":
                    val, reason = zeros, "id_number.check_digit"
                else:
                    val, reason = codes.excel_mangle_sci(orig), "id_number.format"
                if s == 0:
                    hid = val
                else:
                    wid = val
                column = cols[2 + 2 * s]
                break
        elif fault in ("id_check", "id_feb31"):
            orig = (hid, wid)[side]
            val = _wrong_check(r, orig) if fault == "id_check" else _feb31(r, orig)
            reason = "id_number.check_digit" if fault == "id_check" else "id_number.birth_date"
            if side == 0:
                hid = val
            else:
                wid = val
            column = cols[2 + 2 * side]
        elif fault == "date":
            by, bm, bd = _bad_ymd(r, y)
            date_s = f"{by}年{bm}月{bd}日" if "年" in date_s else f"{by:04d}-{bm:02d}-{bd:02d}"
            reason, column = "date.invalid", cols[1]
        prefix = {"结婚": "J", "离婚": "L", "补发结婚证": "BJ"}[e.kind]
        office_div = e.h.div
        cert = f"{prefix}{D.DIV_CODES[office_div]}-{y}-{(e.uid * 7919 + 104729) % 10**9:09d}"
        office = f"{D.DIV_PLACE[office_div]}民政局婚姻登记处"
        hname, wname = e.h.name, e.w.name
        if reason is None:
            hname, wname = _messy_name(r, hname, f), _messy_name(r, wname, f)
        e.row = [e.kind, date_s, hid, hname, wid, wname, office, cert]
        e.reason, e.column = reason, column
        if reason is None:
            etype = {"结婚": "marriage", "离婚": "divorce", "补发结婚证": "reissue"}[e.kind]
            e.truth = [etype, _iso(e.date), e.h.id, e.h.name, e.w.id, e.w.name, office, cert]


def _check(ctx: _Ctx, people: list[_Person], household: dict[int, tuple[bool, str]]) -> None:
    for p in people:
        hh = household.get(p.idx)
        if hh is None or not hh[0]:
            continue
        latest = None
        for e in p.events:
            if e.date <= ctx.date and e.kind != "补发结婚证" and e.reason is None and e.row is not None:
                if latest is None or e.date > latest.date:
                    latest = e
        if latest is None:
            continue
        derived = "20" if latest.kind == "结婚" else "40"
        code = hh[1]
        if (derived == "20" and code not in ("20", "21", "22", "23")) or (derived == "40" and code != "40"):
            ctx.check.add(p.id, code, derived)


def _social(ctx: _Ctx, people: list[_Person], r: random.Random, rs: random.Random) -> None:
    feed = ctx.feeds[SOCIAL]
    cols = feed.ds.column_names
    f, D_ = ctx.f, ctx.date
    table = INVALID_FAULTS[SOCIAL]
    pending: list[str] = []
    dmonth = _ymd(D_)[0] * 100 + _ymd(D_)[1]
    for p in people:
        insured = r.random() < 0.78
        flexible = r.random() < 0.15
        k = int(ctx.n_companies * r.random() ** 1.7)
        start = max(_add_years(p.birth, 18), _SI_START) + int(r.random() * 15 * 365)
        status = "1" if (u := r.random()) < 0.85 else "2" if u < 0.95 else "4"
        types = [t for t, pr in (("110", 0.95), ("310", 0.95), ("210", 0.0 if flexible else 0.6))
                 if r.random() < pr]
        rows = [(t, _pick_fault(r, table, f), r.random(), r.random(), r.random()) for t in types]
        if not insured or p.birth > D_ or not (18 <= _age(p, D_) <= 65):
            continue
        y, m, _ = _ymd(start)
        if y * 100 + m > dmonth:
            continue
        employer = None
        if not flexible:
            # an employer that exists on the delivery date
            for _ in range(10):
                core = _company_core(ctx.seed, k)
                if core[4] <= D_:
                    employer = core[3]
                    break
                k = int(ctx.n_companies * rs.random() ** 1.7)
        for t, fault, u_id, u_mon, u_dup in rows:
            aac002: object = p.id
            aac004 = "1" if p.male else "2"
            aae030: object = f"{y:04d}{m:02d}"
            reason = column = None
            if fault == "id_check":
                aac002 = _wrong_check(rs, p.id)
                reason, column = "id_number.check_digit", cols[0]
            elif fault == "id_feb31":
                aac002 = _feb31(rs, p.id)
                reason, column = "id_number.birth_date", cols[0]
            elif fault == "gender_mismatch":
                aac004 = "2" if p.male else "1"
                reason, column = "id_number.gender_mismatch", cols[2]
            elif fault == "gender_unmapped":
                aac004 = rs.choice(["3", "U"])
                reason, column = "code.unmapped", cols[2]
            elif fault == "month":
                aae030 = f"{y:04d}{rs.choice(['00', '13', '14'])}"
                reason, column = "year_month.invalid", cols[5]
            name = p.name
            if reason is None:
                if u_id < SI_ID_NUMBER * f and p.id[-1] != "X":
                    aac002 = int(p.id)
                if u_mon < SI_MONTH_NUMBER * f:
                    aae030 = int(aae030)
                name = _messy_name(rs, name, f)
            obj = {"aac002": aac002, "aac003": name, "aac004": aac004, "aab998": employer,
                   "aae140": t, "aae030": aae030, "aac008": status}
            line = json.dumps(obj, ensure_ascii=False, separators=(",", ":"))
            truth = None
            if reason is None:
                truth = [p.id, p.name, "1" if p.male else "2", employer, t, f"{y:04d}-{m:02d}", status]
            feed.add(line, truth, reason, column)
            if reason is None and u_dup < SI_DUPLICATE * f:
                pending.append(line)  # the export repeats it on a later page
    for line in pending:
        feed.add(line, None, "row.duplicate", None)


def _births(ctx: _Ctx, people: list[_Person], r: random.Random) -> None:
    feed = ctx.feeds[BIRTH]
    cols = feed.ds.column_names
    f, D_ = ctx.f, ctx.date
    since = ctx.since.get(BIRTH)
    table = INVALID_FAULTS[BIRTH]
    births: list[tuple[int, int, _Person, _Person | None]] = []
    for p in people:
        if p.male:
            continue
        lo_age, hi_age = _add_years(p.birth, 20), _add_years(p.birth, 42)
        k = 0
        for start, end, spouse in p.marriages:
            lo = max(start + 280, lo_age, BIRTH_CERT_START)
            hi = min(end, hi_age, TIMELINE_END)
            if hi <= lo:
                continue
            n = 1 if r.random() < 0.45 else 0
            if n and r.random() < 0.3:
                n = 2
            for _ in range(n):
                births.append((r.randint(lo, hi - 1), p.idx * 8 + k, p, spouse))
                k += 1
        if not p.marriages:
            lo, hi = max(_add_years(p.birth, 22), BIRTH_CERT_START), min(_add_years(p.birth, 38), TIMELINE_END)
            if hi > lo and r.random() < 0.05:
                births.append((r.randint(lo, hi - 1), p.idx * 8 + 7, p, None))
    births.sort(key=lambda b: (b[0], b[1]))
    for when, uid, mother, father in births:
        if when > D_ or (since is not None and when <= since):
            continue
        rb = _rng(ctx.seed, "birth", uid)
        fault = _pick_fault(rb, table, f)
        male = rb.random() < 0.515
        hh, mm = rb.randrange(24), rb.randrange(60)
        if father is not None and D.ETH_CODES[father.eth] in D.DOTTED_ETHNICITIES:
            name = rb.choice(D.DOTTED_MALE if male else D.DOTTED_FEMALE) + D.DOT_STANDARD + father.given
        else:
            parent = father if father is not None else mother
            surname = parent.name[0] if D.DOT_STANDARD not in parent.name else parent.given[:1]
            pool = D.GIVEN_MALE_1 if male else D.GIVEN_FEMALE_1
            name = surname + rb.choice(pool) + (rb.choice(pool) if rb.random() < 0.7 else "")
        father_id = father.id if father is not None else ""
        if father is not None and rb.random() < FATHER_EMPTY * f:
            father_id = ""
        y, mo, d = _ymd(when)
        date_s = f"{y:04d}-{mo:02d}-{d:02d} {hh:02d}:{mm:02d}"
        sex = "1" if male else "0"
        mother_id = mother.id
        reason = column = None
        if fault == "mother_check":
            mother_id = _wrong_check(rb, mother.id)
            reason, column = "id_number.check_digit", cols[5]
        elif fault == "mother_feb31":
            mother_id = _feb31(rb, mother.id)
            reason, column = "id_number.birth_date", cols[5]
        elif fault == "gender_unmapped":
            sex = rb.choice(["3", "U"])
            reason, column = "code.unmapped", cols[2]
        elif fault == "date":
            by, bm, bd = _bad_ymd(rb, y)
            date_s = f"{by:04d}-{bm:02d}-{bd:02d} {hh:02d}:{mm:02d}"
            reason, column = "date.invalid", cols[3]
        letter = chr(ord("O") + (y - 2020) % 12)
        cert = f"{letter}{(uid * 7919 + 7) % 10**9:09d}"
        out_name = _messy_name(rb, name, f) if reason is None else name
        row = [cert, out_name, sex, date_s, D.DIV_CODES[mother.div], mother_id, father_id]
        truth = None
        if reason is None:
            truth = [cert, name, "1" if male else "2", _iso(when), D.DIV_CODES[mother.div],
                     mother.id, father_id or None]
        feed.add(row, truth, reason, column)


def _company_name(r: random.Random, prefix: str, div: int) -> tuple[str, str]:
    """(name, enterprise type)."""
    city = D.DIV_CITY[div].removesuffix("市")
    county = D.DIV_COUNTY[div]
    if r.random() < 0.5:
        brand = r.choice(D.BRANDS)
    else:
        brand = r.choice(D.BRAND_CHARS) + r.choice(D.BRAND_CHARS)
    if r.random() < 0.01:
        brand = brand[0] + r.choice(D.RARE_CHARS)  # outside GBK: GB18030 four-byte
    if prefix == "91":
        t = D.ENT_TYPES_91[D.pick_cum(D.ENT_TYPE_CUM, r.random())]
        return f"{city}{brand}{r.choice(D.INDUSTRIES)}{t[1]}", t[0]
    if prefix == "92":
        return f"{county}{D.SURNAMES[D.pick_cum(D.SURNAME_CUM, r.random())]}记{r.choice(D.SHOPS)}", "个体工商户"
    if prefix == "93":
        return f"{county}{brand}{r.choice(D.CROPS)}种植专业合作社", "农民专业合作社"
    if prefix == "12":
        return D.DIV_PLACE[div] + r.choice(D.INSTITUTIONS_12).format(n=r.randint(1, 12)), "事业单位"
    if prefix == "51":
        return city + "市" + r.choice(D.ASSOCIATIONS_51).format(ind=r.choice(D.INDUSTRIES)), "社会团体"
    return county + r.choice(D.PRIVATE_52).format(brand=brand), "民办非企业单位"


def _fullwidth_code(code: str) -> str:
    return codes.fullwidth(code, letters_only=any(ch.isalpha() for ch in code))


def _hand_typed(r: random.Random, code: str) -> str:
    """A USCC typed by hand with a letter GB 32100 does not use (I, O, S, V, Z)."""
    swaps = {"0": "O", "1": "I", "5": "S", "2": "Z", "U": "V"}
    pos = [i for i in range(8, 18) if code[i] in swaps]
    if pos:
        i = r.choice(pos)
        return code[:i] + swaps[code[i]] + code[i + 1:]
    i = r.randrange(8, 18)
    return code[:i] + r.choice("IOSVZ") + code[i + 1:]


def _org_broken(r: random.Random, code: str) -> str:
    c17 = r.choice([ch for ch in "0123456789X" if ch != code[16]])
    s17 = code[:16] + c17
    return s17 + codes.uscc_check_char(s17)


def _check_broken(r: random.Random, code: str) -> str:
    return code[:17] + r.choice([ch for ch in codes.USCC_CHARS if ch != code[17]])


def _companies(ctx: _Ctx, c: int, people: list[_Person], r: random.Random, r_sub: random.Random) -> None:
    ent, tax = ctx.feeds[ENTERPRISE], ctx.feeds[TAX]
    ecols, tcols = ent.ds.column_names, tax.ds.column_names
    f, D_ = ctx.f, ctx.date
    lo = c * ctx.n_companies // ctx.n_chunks
    hi = (c + 1) * ctx.n_companies // ctx.n_chunks
    adults = [p for p in people if p.birth <= BIRTH_MAX - 25 * 365] or people
    for k in range(lo, hi):
        kind, prefix, div, uscc, est = _company_core(ctx.seed, k)
        name, etype = _company_name(r, prefix, div)
        born_by = est - int(20 * YEAR)
        rep = None
        for _ in range(8):
            cand = adults[r.randrange(len(adults))]
            if cand.birth <= born_by:
                rep = cand
                break
        if rep is None:
            rep = min(adults, key=lambda p: p.birth)
        if prefix == "92":
            cap = f"{r.choice([1, 2, 3, 5, 10, 20, 30, 50]):.2f}"
        elif prefix == "93":
            cap = f"{r.randint(10, 500):.2f}"
        elif prefix[0] == "9":
            cap = (f"{r.choice([10, 30, 50, 100, 200, 300, 500, 1000, 2000, 5000]):.2f}"
                   if r.random() < 0.8 else f"{r.uniform(3, 20000):.2f}")
        else:
            cap = ""
        address = _address(r, div)
        if r.random() < 0.05:
            address += f",{r.randint(2, 30)}层"  # a comma: the field gets quoted
        status = D.ENT_STATUSES[D.pick_cum(D.ENT_STATUS_CUM, r.random())][0]
        rating = D.TAX_RATINGS[D.pick_cum(D.TAX_RATING_CUM, r.random())][0]
        tax_reg = est + r.randint(0, 90)
        authority = f"国家税务总局{D.DIV_PLACE[div]}税务局"
        e_fault = _pick_fault(r, INVALID_FAULTS[ENTERPRISE], f)
        t_fault = _pick_fault(r, INVALID_FAULTS[TAX], f)
        u_serial, u_fw = r.random(), r.random()
        re_ = rt = r_sub

        if kind in ("both", "ent") and est <= D_:
            code, date_s, cap_s, status_s, rep_id = uscc, _iso(est), cap, status, rep.id
            reason = column = None
            if e_fault == "check_char":
                code, reason, column = _check_broken(re_, uscc), "uscc.check_char", ecols[0]
            elif e_fault == "org_code":
                code, reason, column = _org_broken(re_, uscc), "uscc.org_code", ecols[0]
            elif e_fault == "date":
                y, m, d = _bad_ymd(re_, _ymd(est)[0])
                date_s, reason, column = f"{y:04d}-{m:02d}-{d:02d}", "date.invalid", ecols[5]
            elif e_fault == "decimal" and cap:
                cap_s = re_.choice(["壹佰万", "100万", "12.5.0", "五十"])
                reason, column = "decimal.invalid", ecols[6]
            elif e_fault == "status":
                status_s, reason, column = re_.choice(["正常营业", "待核实"]), "code.unmapped", ecols[8]
            elif e_fault == "rep_id_check":
                rep_id, reason, column = _wrong_check(re_, rep.id), "id_number.check_digit", ecols[4]
            rep_name = rep.name
            if reason is None:
                if u_serial < EXCEL_SERIAL * f:
                    date_s = str(est - dt.date(1899, 12, 30).toordinal())
                rep_name = _messy_name(re_, rep_name, f)
            row = [code, name, etype, rep_name, rep_id, date_s, cap_s, address, status_s]
            truth = None
            if reason is None:
                # DECIMAL(18,4), as the standardized layer renders it
                truth = [uscc, name, etype, rep.name, rep.id, _iso(est), cap + "00" if cap else None,
                         address, status]
            ent.add(row, truth, reason, column)

        if kind in ("both", "tax") and tax_reg <= D_:
            code, rep_id = uscc, rep.id
            y, m, d = _ymd(tax_reg)
            date_s = f"{y}/{m}/{d}"
            reason = column = None
            if t_fault == "hand_typed":
                code, reason, column = _hand_typed(rt, uscc), "uscc.format", tcols[0]
            elif t_fault == "check_char":
                code, reason, column = _check_broken(rt, uscc), "uscc.check_char", tcols[0]
            elif t_fault == "org_code":
                code, reason, column = _org_broken(rt, uscc), "uscc.org_code", tcols[0]
            elif t_fault == "date":
                by, bm, bd = _bad_ymd(rt, y)
                date_s, reason, column = f"{by}/{bm}/{bd}", "date.invalid", tcols[3]
            elif t_fault == "rep_id_check":
                rep_id, reason, column = _wrong_check(rt, rep.id), "id_number.check_digit", tcols[2]
            if reason is None and u_fw < TAX_FULLWIDTH * f:
                code = _fullwidth_code(code)
            row = [code, name, rep_id, date_s, rating, authority]
            truth = None
            if reason is None:
                truth = [uscc, name, rep.id, _iso(tax_reg), rating, authority]
            tax.add(row, truth, reason, column)


def _process_chunk(ctx: _Ctx, c: int, overrides: dict[int, int]) -> None:
    n = min(CHUNK, ctx.people - c * CHUNK)
    people = _people_chunk(ctx.seed, c, n, overrides)
    rb = _rng(ctx.seed, "pairs", c)
    events: list[_Event] = []
    for b in range(0, n, BLOCK):
        events.extend(_pair_block(rb, people[b:b + BLOCK]))
    # marriage registration: decide every event up to the date (the check needs them all),
    # deliver those after the previous delivery
    _marriage_rows(ctx, events)
    household = _household(ctx, people, _rng(ctx.seed, "household", c), _rng(ctx.seed, "household2", c))
    since = ctx.since.get(MARRIAGE)
    feed = ctx.feeds[MARRIAGE]
    for e in sorted(events, key=lambda e: (e.date, e.uid)):
        if e.row is not None and (since is None or e.date > since):
            feed.add(e.row, e.truth, e.reason, e.column)
    _check(ctx, people, household)
    _social(ctx, people, _rng(ctx.seed, "social", c), _rng(ctx.seed, "social2", c))
    _births(ctx, people, _rng(ctx.seed, "births", c))
    _companies(ctx, c, people, _rng(ctx.seed, "companies", c), _rng(ctx.seed, "companies2", c))


def _previous_delivery(lake: Lake, ds: metadata.Dataset, date: str) -> int | None:
    folder = lake.landing(ds.dept, ds.name)
    if not folder.is_dir():
        return None
    earlier = []
    for child in folder.iterdir():
        try:
            d = dt.date.fromisoformat(child.name)
        except ValueError:
            continue
        if child.is_dir() and child.name < date:
            earlier.append(d.toordinal())
    return max(earlier) if earlier else None


class _Progress:
    def __init__(self, enabled: bool, total: int, label: str):
        self.bar = None
        if not enabled:
            return
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        console = Console(stderr=True)
        if not console.is_terminal:
            return
        self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TimeRemainingColumn(), console=console, transient=False)
        self.bar.start()
        self.task = self.bar.add_task(label, total=total)

    def phase(self, label: str, total: int):
        if self.bar:
            self.bar.update(self.task, description=label, total=total, completed=0)

    def __call__(self, _=None):
        if self.bar:
            self.bar.advance(self.task)

    def stop(self):
        if self.bar:
            self.bar.stop()


def generate(lake: Lake, people: int, date: str, seed: int = 42, fault_rate: float | None = None,
             truth_dir: Path | None = None, progress: bool = True) -> dict:
    """Write one delivery of each feed into ``lake``'s landing zone.

    Returns ``{dataset_id: {"path": Path, "rows": int, "invalid_rows": int}}`` (ids like
    ``public_security.household_registration``); ``invalid_rows`` counts the rows the
    standards must quarantine. With ``truth_dir``, also writes the ground truth there.
    """
    if people < 1:
        raise ValueError(f"--people must be at least 1, got {people}")
    try:
        day = dt.date.fromisoformat(date)
    except ValueError:
        raise ValueError(f"--date must be YYYY-MM-DD, got {date!r}") from None
    if fault_rate is not None and fault_rate < 0:
        raise ValueError(f"--fault-rate must be >= 0, got {fault_rate}")
    date = day.isoformat()
    by_id = {d.id: d for d in metadata.datasets()}
    missing = [fid for fid in FEEDS if fid not in by_id]
    if missing:
        raise metadata.MetadataError(f"generator needs datasets not declared in dbt sources: {missing}")
    truth_dir = Path(truth_dir) if truth_dir is not None else None
    n_chunks = -(-people // CHUNK)
    bar = _Progress(progress and people >= 50_000, n_chunks, "checking ID numbers")
    feeds: dict[str, _Feed] = {}
    try:
        overrides = _resolve_collisions(seed, people, bar)
        since = {fid: _previous_delivery(lake, by_id[fid], date)
                 for fid in FEEDS if by_id[fid].delivery == "incremental"}
        for fid in FEEDS:
            feeds[fid] = _Feed(lake, by_id[fid], date, truth_dir)
        ctx = _Ctx(seed=seed, people=people, date=day.toordinal(),
                   f=1.0 if fault_rate is None else float(fault_rate), since=since,
                   n_companies=_n_companies(people), n_chunks=n_chunks, feeds=feeds,
                   check=_CheckWriter(truth_dir))
        bar.phase(f"generating {people:,} people", n_chunks)
        for c in range(n_chunks):
            _process_chunk(ctx, c, overrides)
            bar()
        for feed in feeds.values():
            feed.close()
        ctx.check.close()
    except BaseException:
        for feed in feeds.values():
            feed.abort()
        raise
    finally:
        bar.stop()
        _company_core.cache_clear()
    return {fid: {"path": feed.path, "rows": feed.rows, "invalid_rows": feed.invalid}
            for fid, feed in feeds.items()}


def cli(args) -> int:
    lake = Lake.default().ensure()
    truth = Path(args.truth).resolve() if args.truth else None
    try:
        result = generate(lake, people=args.people, date=args.date, seed=args.seed,
                          fault_rate=args.fault_rate, truth_dir=truth, progress=True)
    except ValueError as exc:
        sys.stderr.write(f"govlake generate: error: {exc}\n")
        raise SystemExit(2) from None
    out = io.StringIO()
    out.write(f"{'feed':<42} {'rows':>12} {'invalid':>9}  file\n")
    for fid, info in result.items():
        out.write(f"{fid:<42} {info['rows']:>12,} {info['invalid_rows']:>9,}  {info['path']}\n")
    if truth:
        out.write(f"ground truth: {truth}\n")
    sys.stdout.write(out.getvalue())
    return 0
