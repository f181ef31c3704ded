"""The key index of the sharing service's fast path (govlake.sharing.service.fastpath) answers
exactly what the service's DuckDB query answers today, for clear keys,
join tokens, duplicates, NULLs, Chinese values and keys that are absent; and it is rebuilt when
``current`` moves."""

from __future__ import annotations

import datetime as dt
import random

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import access_support as S
from govlake.sharing.service import fastpath as F


@pytest.fixture(autouse=True)
def _fresh_registry():
    F.Index.clear()
    yield
    F.Index.clear()


def _rows(n: int) -> list[dict]:
    rows = S.people(n, seed=11)
    for r in rows:
        r["birth_date"] = dt.date.fromisoformat(r["birth_date"])
    return rows


def _write(path, rows, row_group_size=97):
    pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=row_group_size)
    return path


def _duck(path, cols, keycol, value):
    con = duckdb.connect()
    cur = con.execute(F.equivalent_sql(cols, keycol), [str(path), value])
    names = [d[0] for d in cur.description]
    return [dict(zip(names, r)) for r in cur.fetchall()]


def test_lookup_equals_duckdb_for_every_key_and_absent_keys(tmp_path):
    rows = _rows(1000)
    rows[500]["id_number"] = rows[10]["id_number"]  # a duplicated key (two rows) across row groups
    rows[600]["id_number"] = None  # a NULL key is never found
    rows[700]["id_number"] = rows[10]["id_number"]  # three rows
    path = _write(tmp_path / "part-0.parquet", rows)
    idx = F.Index.for_version(tmp_path, "population_base", 1, "id_number", path)
    assert idx.num_rows == 1000 and idx.pf.metadata.num_row_groups == 1
    cols = ["id_number", "name", "birth_date", "division_code", "department_count"]
    rng = random.Random(3)
    sample = rng.sample([r["id_number"] for r in rows if r["id_number"]], 150) + [rows[10]["id_number"]]
    for key in sample:
        assert idx.lookup(key, cols) == _duck(path, cols, "id_number", key), key
    dup = idx.lookup(rows[10]["id_number"], ["name"])
    assert sorted(d["name"] for d in dup) == sorted([rows[10]["name"], rows[500]["name"], rows[700]["name"]])
    for absent in ["110105190001010000", "", "1101051980010100", "张三"]:
        assert idx.lookup(absent, cols) == [] == _duck(path, cols, "id_number", absent)
    # Chinese values and dates come back as the DuckDB query returns them
    got = idx.lookup(rows[0]["id_number"])
    assert got[0]["name"] == rows[0]["name"] and got[0]["birth_date"] == rows[0]["birth_date"]
    assert got[0]["address"] == rows[0]["address"]


def test_rows_for_equals_the_verification_query(tmp_path):
    rows = _rows(800)
    path = _write(tmp_path / "p.parquet", rows, row_group_size=128)
    idx = F.Index.for_version(tmp_path, "population_base", 1, "id_number", path)
    keys = [r["id_number"] for r in rows[::7]] + ["110105190001010000", rows[3]["id_number"]]
    fields = ["gender_code", "name"]
    got = idx.rows_for(keys, fields)
    con = duckdb.connect()
    want: dict[str, list[tuple]] = {}
    for row in con.execute("SELECT id_number, gender_code, name FROM read_parquet(?) WHERE id_number IN "
                           "(SELECT unnest(?::VARCHAR[]))", [str(path), sorted(set(keys))]).fetchall():
        want.setdefault(row[0], []).append(row[1:])
    assert got == want
    assert "110105190001010000" not in got and len(got) == len(set(keys)) - 1


def test_join_tokens_as_keys_variable_length(tmp_path):
    """A rendition keyed by join tokens (long, variable-length keys) and mixed-length keys."""
    rows = [{"k": ("v1:" + format(i * 7919, "x") * (1 + i % 5)), "v": f"值{i}"} for i in range(700)]
    path = _write(tmp_path / "tok.parquet", rows, row_group_size=50)
    idx = F.Index.for_version(tmp_path, "t", 1, "k", path)
    for r in rows[::13]:
        assert idx.lookup(r["k"], ["v"]) == [{"v": r["v"]}] == _duck(path, ["v"], "k", r["k"])
    assert idx.lookup(rows[5]["k"] + "z", ["v"]) == [] == _duck(path, ["v"], "k", rows[5]["k"] + "z")


def test_the_copy_is_reused_and_rebuilt_when_the_source_changes(tmp_path):
    rows = _rows(300)
    path = _write(tmp_path / "p.parquet", rows)
    a = F.Index(path, "id_number")
    assert a.built and a.copy_path.is_file() and a.pf.metadata.num_row_groups == 1
    assert F.Index(path, "id_number").built is False  # up to date: not written again
    changed = [dict(r) for r in rows]
    changed[7]["name"] = "司马新"
    _write(path, changed + _rows(3000)[-2900:])  # same path, other bytes, more rows
    b = F.Index(path, "id_number")
    assert b.built and b.num_rows == 3200 and b.pf.metadata.num_row_groups == 2
    assert b.lookup(rows[7]["id_number"], ["name"]) == [{"name": "司马新"}]


def test_index_is_built_once_and_dropped_when_current_moves(tmp_path, lake):
    rows = _rows(200)
    v1 = _write(tmp_path / "v1.parquet", rows)
    changed = [dict(r) for r in rows]
    changed[0]["name"] = "欧阳新名"
    v2 = _write(tmp_path / "v2.parquet", changed)
    a = F.Index.for_version(lake, "population_base", 1, "id_number", v1)
    assert F.Index.for_version(lake, "population_base", 1, "id_number", v1) is a
    assert a.copy_path.is_relative_to(lake.meta_root / "service" / "lookup" / "population_base" / "v1")
    b = F.Index.for_version(lake, "population_base", 2, "id_number", v2)
    assert a not in F.Index.held() and b in F.Index.held()
    assert not a.copy_path.exists() and b.copy_path.is_file()  # the old version's copy is deleted
    assert b.lookup(rows[0]["id_number"], ["name"]) == [{"name": "欧阳新名"}]
    # another product's index is not touched by this product's move
    c = F.Index.for_version(lake, "other", 1, "id_number", v1)
    v3 = _write(tmp_path / "v3.parquet", rows)
    F.Index.for_version(lake, "population_base", 3, "id_number", v3)
    assert c in F.Index.held() and b not in F.Index.held()


def test_memory_is_one_key_per_row_group(tmp_path):
    rows = _rows(9000)
    path = _write(tmp_path / "p.parquet", rows, row_group_size=1000)
    idx = F.Index.for_version(tmp_path, "population_base", 1, "id_number", path)
    assert idx.pf.metadata.num_row_groups == 5 and len(idx.first_keys) == 5
    assert idx.first_keys == sorted(idx.first_keys) and idx.nbytes < 2000
    for r in rows[::97]:  # keys at and around the row-group boundaries are found
        assert idx.lookup(r["id_number"], ["name"]) == [{"name": r["name"]}]


def test_bad_key_column_is_named(tmp_path):
    path = _write(tmp_path / "p.parquet", _rows(10))
    with pytest.raises(F.FastPathError, match=r"p\.parquet: no column 'uscc'"):
        F.Index(path, "uscc")
    with pytest.raises(F.FastPathError, match="department_count.*int64 is not text"):
        F.Index(path, "department_count")


def test_encrypted_source_gives_an_encrypted_copy_and_the_same_answers(tmp_path, monkeypatch):
    """ADR 0014: a published file with L3/L4 values is encrypted; the lookup copy holds the same
    values, so it is encrypted too, and answers equal DuckDB's on the encrypted file."""
    from govlake.sharing import crypto

    monkeypatch.setenv(crypto.KEYRING_ENV, str(tmp_path / "secrets" / "parquet-keys.json"))
    crypto.ensure_keyring()
    rows = _rows(3000)
    plain = _write(tmp_path / "plain.parquet", rows, row_group_size=1000)
    enc = tmp_path / "v" / "part-0.parquet"
    enc.parent.mkdir()
    crypto.encrypt_copy(plain, enc)
    assert crypto.is_encrypted(enc)
    idx = F.Index(enc, "id_number", copy_dir=tmp_path / "lookup")
    assert idx.encrypted and crypto.is_encrypted(idx.copy_path)
    assert rows[5]["name"].encode("utf-8") not in idx.copy_path.read_bytes()
    cols = ["id_number", "name", "birth_date"]
    con = duckdb.connect()
    for r in rows[::150]:
        got = idx.lookup(r["id_number"], cols)
        cur = con.execute(f"SELECT id_number, name, birth_date FROM {crypto.read_parquet_sql(enc, con)} "
                          "WHERE id_number = ?", [r["id_number"]])
        assert got == [dict(zip(cols, t)) for t in cur.fetchall()] and got[0]["name"] == r["name"]


def test_concurrent_lookups_from_many_threads(tmp_path, monkeypatch):
    """The service calls the index from its thread pool: the same answers from 8 threads at once,
    every row group decoded anew (no cache), no crash."""
    import threading

    monkeypatch.setattr(F.CACHE, "max_bytes", 0)
    rows = _rows(6000)
    path = _write(tmp_path / "p.parquet", rows)
    idx = F.Index(path, "id_number", copy_dir=tmp_path / "lookup")
    assert idx.pf.metadata.num_row_groups == 3
    bad: list = []

    def work(k):
        for r in rows[k::8][:300]:
            got = idx.lookup(r["id_number"], ["name", "birth_date"])
            if {"name": r["name"], "birth_date": r["birth_date"]} not in got:
                bad.append(r["id_number"])

    ths = [threading.Thread(target=work, args=(k,)) for k in range(8)]
    for t in ths:
        t.start()
    for t in ths:
        t.join()
    assert bad == []


def test_ready_builds_in_the_background_and_never_blocks(tmp_path, lake):
    import time

    rows = _rows(2000)
    path = _write(tmp_path / "p.parquet", rows, row_group_size=500)
    assert F.Index.ready(lake, "population_base", 1, "id_number", path) is None  # not built yet: fall back
    deadline = time.monotonic() + 60
    idx = None
    while idx is None and time.monotonic() < deadline:
        time.sleep(0.05)
        idx = F.Index.ready(lake, "population_base", 1, "id_number", path)
    assert idx is not None and idx is F.Index.for_version(lake, "population_base", 1, "id_number", path)
    assert idx.lookup(rows[3]["id_number"], ["name"]) == [{"name": rows[3]["name"]}]
    # a build that cannot succeed is reported once and the caller keeps falling back
    assert F.Index.ready(lake, "population_base", 1, "uscc", path) is None
    deadline = time.monotonic() + 60
    while not F.Index.failures() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert F.Index.ready(lake, "population_base", 1, "uscc", path) is None
    assert "no column 'uscc'" in F.Index.failures()[(str(path), "uscc")]
