"""Encryption at rest of published versions (docs/adr/0014-encryption-at-rest.md).

A real publish (real files, real pyarrow and DuckDB): without the keyring nobody reads a clear
L3/L4 value from the version directory; with it every value equals the candidate; a rotation
gives new versions the new key and leaves old versions readable.
"""

from __future__ import annotations

import json
import os
import stat

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import access_support as S
from govlake import masking, products, query
from govlake.publish import publish
from govlake.sharing import crypto
from lake_support import passed_gate

KEY = bytes.fromhex("00112233445566778899aabbccddeeff" * 2)
SENSITIVE = ("id_number", "name", "birth_date", "address", "phone")  # L3/L4 in access_support


def _publish(lake, rows, run_id, **kw):
    cand = lake.candidate(run_id) / "population_base.parquet"
    cand.parent.mkdir(parents=True, exist_ok=True)
    # uncompressed candidate: a plain copy of it shows every value in its bytes
    pq.write_table(pa.Table.from_pylist(rows), cand, compression="none")
    gr = passed_gate(lake, run_id, "population_base", cand, len(rows))
    return publish(lake, "population_base", cand, run_id=run_id, gate_result=gr, inputs=[], **kw), cand


@pytest.fixture
def env(tmp_path, lake, monkeypatch):
    dbt = S.write_dbt_dir(tmp_path)
    monkeypatch.setattr(products, "load", lambda dbt_dir=None, files=None, _l=products.load: _l(dbt))
    grants_file = S.write_grants(tmp_path)
    monkeypatch.setenv("GOVLAKE_GRANTS_FILE", str(grants_file))
    monkeypatch.setenv("GOVLAKE_TOKEN_KEY", KEY.hex())
    ring = tmp_path / "secrets" / "parquet-keys.json"
    monkeypatch.setenv(crypto.KEYRING_ENV, str(ring))
    monkeypatch.delenv("GOVLAKE_PARQUET_ENCRYPTION", raising=False)  # on by default: no switch
    return lake, ring, grants_file, dbt


def _files(vdir):
    return sorted(p for p in vdir.rglob("*") if p.is_file())


def _needles(rows):
    return {str(r[c]).encode("utf-8") for r in rows for c in SENSITIVE if r[c] is not None}


def test_without_the_key_no_clear_l3_l4_value_is_readable(env, monkeypatch):
    lake, ring, _, _ = env
    rows = S.people(300)
    assert not ring.exists()  # the publish creates the keyring (0600), as a fresh clone needs
    v, cand = _publish(lake, rows, "20261124T101500-ab12cd")
    vdir = lake.version_dir("population_base", v)
    m = json.loads((vdir / "_manifest.json").read_text(encoding="utf-8"))
    assert m["encryption"]["key_id"] == crypto.current_key_id()
    assert m["files"][0]["encrypted"] is True
    parquets = [p for p in _files(vdir) if p.suffix == ".parquet"]
    assert len(parquets) >= 2, "the data file and at least one rendition"  # mz_analyst's
    assert stat.S_IMODE(ring.stat().st_mode) == 0o600
    assert not str(ring).startswith(str(lake.root))

    # the engineer has the files but not the keyring
    monkeypatch.setenv(crypto.KEYRING_ENV, str(ring.parent / "elsewhere.json"))
    needles = _needles(rows)
    for p in _files(vdir):
        data = p.read_bytes()
        found = [n.decode() for n in needles if n in data]
        assert not found, f"{p.name} holds clear values {found[:3]}"
    for p in parquets:
        assert crypto.is_encrypted(p)
        with pytest.raises(OSError, match="encrypted"):
            pq.read_table(p)
        with pytest.raises(duckdb.Error, match="encrypt"):
            duckdb.connect().execute(f"SELECT * FROM read_parquet('{p}')").fetchall()
        with pytest.raises(crypto.KeyringError, match="elsewhere.json"):
            pq.read_table(p, **crypto.arrow_read_options(p))

    # control: the same rows published without encryption do show their values (the byte
    # search above can fail)
    monkeypatch.setenv(crypto.KEYRING_ENV, str(ring))
    v2, _ = _publish(lake, rows, "20261124T101600-ab12cd", encrypt=False, renditions=False)
    plain = lake.version_dir("population_base", v2) / "population_base.parquet"
    assert not crypto.is_encrypted(plain)
    assert sum(n in plain.read_bytes() for n in needles) > len(needles) // 2
    assert "encryption" not in lake.manifest("population_base", v2)


def test_with_the_key_values_equal_the_candidate(env):
    lake, _, grants_file, dbt = env
    rows = S.people(300)
    v, cand = _publish(lake, rows, "20261124T101500-ab12cd")
    vdir = lake.version_dir("population_base", v)
    data = vdir / "population_base.parquet"
    want = pq.read_table(cand)
    got = pq.read_table(data, **crypto.arrow_read_options(data))
    assert got.equals(want)
    con = duckdb.connect()
    duck = con.sql(f"SELECT * FROM {crypto.read_parquet_sql(data, con, 'hive_partitioning = false')}"
                   ).to_arrow_table()
    assert duck.to_pylist() == want.to_pylist()
    # a masked rendition (mz_analyst: names masked, ID numbers tokenized) read with the key
    m = lake.manifest("population_base", v)
    rend = vdir / m["renditions"][0]["path"]
    assert m["renditions"][0]["encryption_key_id"] == m["encryption"]["key_id"]
    rt = pq.read_table(rend, **crypto.arrow_read_options(rend))
    assert rt.column("name").to_pylist() == [masking.mask_name(r["name"]) for r in rows]
    assert rt.column("id_number").to_pylist() == [masking.token("id_number", r["id_number"], KEY, "sha256")
                                                  for r in rows]
    # the sharing engine reads the encrypted data file (cleared role) and rendition (masked role)
    r0 = rows[17]
    res = query.run_query("ga_analyst", "人口信息核查",
                          f"SELECT name, phone FROM population_base WHERE id_number = '{r0['id_number']}'",
                          lake=lake, grants_path=grants_file, dbt_dir=dbt)
    assert res.table.to_pylist() == [{"name": r0["name"], "phone": r0["phone"]}]
    res = query.run_query("mz_analyst", "婚姻登记核验", "SELECT count(*), min(name) FROM population_base",
                          lake=lake, grants_path=grants_file, dbt_dir=dbt)
    assert list(res.table.to_pylist()[0].values()) == [300, min(masking.mask_name(r["name"]) for r in rows)]


def test_rotation_new_versions_new_key_old_versions_readable(env, monkeypatch):
    lake, ring, _, _ = env
    rows = S.people(50)
    v1, _ = _publish(lake, rows, "20261124T101500-ab12cd")
    k1 = lake.manifest("population_base", v1)["encryption"]["key_id"]
    out = crypto.rotate()
    assert out["retired"] == [k1] and out["key_id"] != k1
    assert stat.S_IMODE(ring.stat().st_mode) == 0o600
    assert "key" not in json.dumps(crypto.key_ids()).replace('"key_id"', "")  # no key material listed
    v2, _ = _publish(lake, rows[:40], "20261124T101600-ab12cd")
    m2 = lake.manifest("population_base", v2)
    assert m2["encryption"]["key_id"] == out["key_id"]
    f1 = lake.version_dir("population_base", v1) / "population_base.parquet"
    f2 = lake.version_dir("population_base", v2) / "population_base.parquet"
    assert crypto.file_key_id(f1) == k1 and crypto.file_key_id(f2) == out["key_id"]
    assert pq.read_table(f1, **crypto.arrow_read_options(f1)).num_rows == 50  # old version readable
    con = duckdb.connect()
    assert con.execute(f"SELECT count(*) FROM {crypto.read_parquet_sql(f1, con)}").fetchone()[0] == 50
    assert con.execute(f"SELECT count(*) FROM {crypto.read_parquet_sql(f2, con)}").fetchone()[0] == 40
    # a keyring without the retired key cannot open the old version, and says which key it lacks
    doc = json.loads(ring.read_text())
    doc["keys"] = [k for k in doc["keys"] if k["id"] != k1]
    other = ring.with_name("only-new.json")
    fd = os.open(other, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, json.dumps(doc).encode())
    os.close(fd)
    monkeypatch.setenv(crypto.KEYRING_ENV, str(other))
    with pytest.raises(crypto.KeyringError, match=k1):
        crypto.read_parquet_sql(f1, duckdb.connect())


def test_keyring_errors_name_the_file(env, tmp_path, monkeypatch):
    _, ring, _, _ = env
    crypto.ensure_keyring()
    os.chmod(ring, 0o644)
    with pytest.raises(crypto.KeyringError, match="chmod 600"):
        crypto.current_key_id()
    os.chmod(ring, 0o600)
    bad = tmp_path / "bad.json"
    fd = os.open(bad, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, b'{"keys": [{"id": "k", "key": "not base64!"}]}')
    os.close(fd)
    with pytest.raises(crypto.KeyringError, match="bad.json: key k"):
        crypto.load_keyring(bad)


STATS_YAML = S.SHARED_MODELS_YAML + """\
  - name: division_stats
    description: 区划人口统计
    config:
      meta:
        product: true
        title: 区划人口统计
        code: GOV-TJ-0003
        owner_department: 统计
        owner: 省统计局
        sharing_type: 无条件共享
        update_cycle: daily
        summary: 各区划人口数
    columns:
      - name: division_code
        config: {meta: {grade: L1, element: division_code}}
      - name: people
        config: {meta: {grade: L2, element: count}}
"""


def test_l1_l2_only_products_stay_plain(env, tmp_path, monkeypatch):
    lake = env[0]
    S.write_dbt_dir(tmp_path, STATS_YAML)  # the fixture's dbt dir, plus an L1/L2-only product
    assert crypto.needs_encryption("division_stats", ["division_code", "people"]) is False
    assert crypto.needs_encryption("population_base", ["division_code", "name"]) is True
    assert crypto.needs_encryption("no_such_product", ["division_code"]) is True  # fail closed
    run_id = "20261124T101500-ab12cd"
    cand = lake.candidate(run_id) / "division_stats.parquet"
    cand.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"division_code": ["110105", "330106"], "people": [3, 4]}), cand)
    gr = passed_gate(lake, run_id, "division_stats", cand, 2, evaluated=1)
    v = publish(lake, "division_stats", cand, run_id=run_id, gate_result=gr, inputs=[])
    data = lake.version_dir("division_stats", v) / "division_stats.parquet"
    assert not crypto.is_encrypted(data)
    assert "encryption" not in lake.manifest("division_stats", v)
    assert data.read_bytes() == cand.read_bytes()  # a byte copy, as before ADR 0014
    con = duckdb.connect()
    assert crypto.read_parquet_sql(data, con).startswith("read_parquet(")


# ---- at a size DuckDB's own reader fails on --------------------------------------------------
BIG = 150_000  # DuckDB 2.0.1 fails from ~100 k rows (a boolean column); 20 k reads fine


def _big_table(n: int) -> pa.Table:
    import numpy as np

    rng = np.random.default_rng(5)
    ids = np.char.add("3301061990", np.char.zfill(np.arange(n).astype(str), 8))
    names = np.array(["王伟", "李芳", "张娜", "欧阳秀英", "陈静"])[rng.integers(0, 5, n)]
    return pa.table({
        "id_number": pa.array(ids.tolist()),
        "name": pa.array(names.tolist()),
        "division_code": pa.array(np.array(["110105", "330106", "440305"])[rng.integers(0, 3, n)].tolist()),
        "birth_date": pa.array((np.datetime64("1950-01-01") + rng.integers(0, 20000, n).astype("timedelta64[D]"))),
        "phone": pa.array(np.char.add("139", np.char.zfill(rng.integers(0, 10**8, n).astype(str), 8)).tolist(),
                          mask=rng.random(n) < 0.05),
        "department_count": pa.array(rng.integers(1, 4, n).astype(np.int32)),
        # the column DuckDB 2.0.1 fails on: RLE-encoded booleans in an encrypted file (from ~100 k
        # rows; at 20 k it reads them)
        "in_household_registration": pa.array((rng.random(n) < 0.97).tolist()),
    })


def test_large_encrypted_file_duckdb_reader_fails_dataset_path_reads(env, tmp_path):
    """The finding that kept encryption off (ADR 0014): DuckDB's reader, given the file's data
    key, fails on a multi-page encrypted file; the pyarrow-dataset path reads it, value for
    value, with filters and aggregates, after the connection is locked down."""
    import base64

    crypto.ensure_keyring()
    table = _big_table(BIG)
    plain = tmp_path / "plain.parquet"
    pq.write_table(table, plain, compression="zstd", row_group_size=122_880)
    enc = tmp_path / "enc.parquet"
    crypto.encrypt_copy(plain, enc)
    assert crypto.is_encrypted(enc)

    # DuckDB's own reader with the right key: fails (if a DuckDB upgrade fixes this, this
    # assertion fails and ADR 0014 can reconsider the read path)
    con = duckdb.connect()
    name, dek = crypto._file_key(enc)
    con.execute(f"PRAGMA add_parquet_key('{name}', '{base64.b64encode(dek).decode()}')")
    with pytest.raises(duckdb.Error, match="AES tag"):
        con.execute(f"SELECT count(*) FILTER (WHERE in_household_registration) FROM read_parquet('{enc}', "
                    f"encryption_config = {{footer_key: '{name}'}})").fetchall()

    # the pyarrow-dataset path, on a locked-down connection without file access
    con = duckdb.connect(config={"threads": 2})
    src = crypto.read_parquet_sql(enc, con)
    con.execute("SET python_enable_replacements = false")
    con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")
    ref = duckdb.connect()
    rsrc = f"read_parquet('{plain}')"
    queries = [
        "SELECT count(*), min(name), max(phone), count(phone), sum(department_count) FROM {s}",
        "SELECT division_code, count(*), min(birth_date), max(name) FROM {s} GROUP BY 1 ORDER BY 1",
        "SELECT * FROM {s} WHERE id_number = '330106199000123456'",
        "SELECT id_number, phone FROM {s} WHERE birth_date >= DATE '1990-01-01' AND division_code = '440305' "
        "AND phone IS NOT NULL ORDER BY id_number LIMIT 50",
        "SELECT count(*) FROM {s} WHERE phone IS NULL OR name IN ('欧阳秀英', '陈静')",
        "SELECT in_household_registration, count(*) FROM {s} GROUP BY 1 ORDER BY 1",
        "SELECT count(*) FROM {s} WHERE NOT in_household_registration AND division_code <> '110105'",
        "SELECT count(*) FROM {s} WHERE department_count > 2 AND name LIKE '欧阳%'",
    ]
    for q in queries:
        got = con.execute(q.format(s=src)).fetchall()
        assert got == ref.execute(q.format(s=rsrc)).fetchall(), q
        assert got and got != [(0,)], q  # each query finds rows
    row = con.execute(f"SELECT name, division_code FROM {src} WHERE id_number = '330106199000123456'").fetchall()
    assert row == [(table.column("name")[123456].as_py(), table.column("division_code")[123456].as_py())]
    # whole file, in file order, equals the source
    assert con.sql(f"SELECT * FROM {src}").to_arrow_table().equals(table)
    # the locked connection still cannot read files directly
    for f in (enc, plain):
        with pytest.raises(duckdb.Error, match="[Pp]ermission|external access"):
            con.execute(f"SELECT count(*) FROM read_parquet('{f}')").fetchall()


def test_large_publish_renditions_and_engine(env):
    """A publish at that size (data file and renditions encrypted, built through the dataset
    path) and the engine's reads of both."""
    lake, _, grants_file, dbt = env
    rows = S.people(40)
    table = _big_table(BIG)
    extra = pa.table({"gender_code": ["1"] * BIG, "address": ["浙江省杭州市西湖区文三路100号"] * BIG})
    for c in extra.column_names:
        table = table.append_column(c, extra.column(c))
    run_id = "20261124T101500-ab12cd"
    cand = lake.candidate(run_id) / "population_base.parquet"
    cand.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, cand, compression="zstd", row_group_size=122_880)
    gr = passed_gate(lake, run_id, "population_base", cand, BIG, evaluated=1)
    v = publish(lake, "population_base", cand, run_id=run_id, gate_result=gr, inputs=[])
    del rows
    m = lake.manifest("population_base", v)
    vdir = lake.version_dir("population_base", v)
    assert m["encryption"]["key_id"] and m["renditions"]
    for f in [vdir / "population_base.parquet"] + [vdir / r["path"] for r in m["renditions"]]:
        assert crypto.is_encrypted(f), f
        assert pq.read_metadata(f, **crypto.arrow_read_options(f)).num_rows == BIG
    rend = vdir / m["renditions"][0]["path"]
    # the rendition carries the boolean column DuckDB's reader fails on: the build read it
    assert "in_household_registration" in pq.read_schema(rend, **crypto.arrow_read_options(rend)).names
    rt = pq.read_table(rend, columns=["id_number", "name"], **crypto.arrow_read_options(rend))
    i = 98_765
    assert rt.column("name")[i].as_py() == masking.mask_name(table.column("name")[i].as_py())
    assert rt.column("id_number")[i].as_py() == masking.token("id_number", table.column("id_number")[i].as_py(),
                                                              KEY, "sha256")
    key = table.column("id_number")[i].as_py()
    res = query.run_query("ga_analyst", "人口信息核查",
                          f"SELECT name, phone FROM population_base WHERE id_number = '{key}'",
                          lake=lake, grants_path=grants_file, dbt_dir=dbt)
    assert res.table.to_pylist() == [{"name": table.column("name")[i].as_py(), "phone": table.column("phone")[i].as_py()}]
    res = query.run_query("mz_analyst", "婚姻登记核验",
                          "SELECT division_code, count(*) AS n FROM population_base GROUP BY 1 ORDER BY 1",
                          lake=lake, grants_path=grants_file, dbt_dir=dbt)
    want = duckdb.connect().execute(f"SELECT division_code, count(*) FROM read_parquet('{cand}') GROUP BY 1 ORDER BY 1").fetchall()
    assert [tuple(r.values()) for r in res.table.to_pylist()] == want


def test_engine_registration_exposes_only_the_product_and_its_plan(env):
    """User SQL reaches an encrypted product only as its product name, with the columns and
    values of the role's rendition; no other registered name, no file, no replacement scan."""
    lake, _, grants_file, dbt = env
    rows = S.people(60)
    _publish(lake, rows, "20261124T101500-ab12cd")
    data = lake.version_dir("population_base", lake.current_version("population_base")) / "population_base.parquet"
    # mz_analyst (L2): names masked, ID numbers as tokens — read from the encrypted rendition
    res = query.run_query("mz_analyst", "婚姻登记核验", "SELECT * FROM population_base",
                          lake=lake, grants_path=grants_file, dbt_dir=dbt)
    got = res.table.to_pylist()
    assert [r["name"] for r in got] == [masking.mask_name(r["name"]) for r in rows]
    assert [r["id_number"] for r in got] == [masking.token("id_number", r["id_number"], KEY, "sha256") for r in rows]
    clear = {r[c] for r in rows for c in ("id_number", "name")}
    assert not clear & {v for r in got for v in r.values()}
    for sql in ("SELECT count(*) FROM __govlake_enc_x",
                f"SELECT count(*) FROM '{data}'",
                f"SELECT count(*) FROM read_parquet('{data}')",
                "SELECT * FROM duckdb_views()",
                "SELECT * FROM information_schema.tables"):
        with pytest.raises(query.QueryRefused):
            query.run_query("mz_analyst", "婚姻登记核验", sql, lake=lake, grants_path=grants_file, dbt_dir=dbt)
    # inside the prepared, locked connection itself (below the SQL checks): one relation, the
    # product's, with the plan's columns; no file reachable
    auth = query.authorize(lake, "mz_analyst", "婚姻登记核验", ["population_base"], base={},
                           grants_path=grants_file, dbt_dir=dbt)
    prep = query.prepare(lake, auth, query.analyze("SELECT * FROM population_base"))
    try:
        assert crypto.is_encrypted(prep.files["population_base"])
        names = {r[0] for r in prep.con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
        assert names == {"population_base"}
        cols = [r[0] for r in prep.con.execute("DESCRIBE population_base").fetchall()]
        assert cols == res.table.column_names
        for f in (data, prep.files["population_base"]):
            with pytest.raises(duckdb.Error):
                prep.con.execute(f"SELECT count(*) FROM read_parquet('{f}')").fetchall()
        with pytest.raises(duckdb.Error):
            prep.con.execute("SET python_enable_replacements = true")
    finally:
        prep.con.close()
    # a projection registers only the columns asked for
    con = duckdb.connect()
    crypto.register(con, "p", data, ["division_code", "name"])
    assert con.sql("SELECT * FROM p").to_arrow_table().column_names == ["division_code", "name"]
    with pytest.raises(duckdb.Error, match="id_number"):
        con.execute("SELECT id_number FROM p").fetchall()


def test_fastpath_lookup_copy_of_a_large_encrypted_file(env, tmp_path):
    """The service's fast path (sharing/service/fastpath.py) on an encrypted file DuckDB's
    reader cannot read: its key-sorted copy is built from the in-memory decryption, is itself
    encrypted, nothing clear is left in its folder (no spill), and lookups equal the source."""
    from govlake.sharing.service import fastpath as F

    crypto.ensure_keyring()
    table = _big_table(BIG)
    plain = tmp_path / "plain.parquet"
    pq.write_table(table, plain, compression="zstd", row_group_size=122_880)
    enc = tmp_path / "v" / "population_base.parquet"
    enc.parent.mkdir()
    crypto.encrypt_copy(plain, enc)
    folder = tmp_path / "lookup"
    idx = F.Index(enc, "id_number", copy_dir=folder)
    assert idx.encrypted and crypto.is_encrypted(idx.copy_path) and idx.num_rows == BIG
    probes = [7, 4_321, 98_765, BIG - 1]
    needles = {table.column(c)[i].as_py().encode("utf-8") for i in probes for c in ("id_number", "phone")
               if table.column(c)[i].as_py()}
    for f in (p for p in folder.rglob("*") if p.is_file()):
        data = f.read_bytes()
        assert not [n for n in needles if n in data], f"{f.name} holds clear values"
    assert not list(folder.rglob(".spill*")) or not any(p.is_file() for p in folder.rglob(".spill/*"))
    cols = ["id_number", "name", "in_household_registration"]
    for i in probes:
        want = {c: table.column(c)[i].as_py() for c in cols}
        assert idx.lookup(want["id_number"], cols) == [want]
    assert idx.lookup("330106199099999999", cols) == []


def test_concurrent_keyring_creation_keeps_one_key(env):
    """Parallel publishes on a fresh clone race to create the keyring: exactly one keyring is
    created and every process gets the same key (a replaced keyring would orphan files)."""
    from concurrent.futures import ThreadPoolExecutor

    _, ring, _, _ = env
    assert not ring.exists()
    def create(_):
        p = crypto.ensure_keyring()
        return p, json.loads(p.read_text())["keys"][0]["id"]  # the key this process would use

    with ThreadPoolExecutor(8) as ex:
        got = list(ex.map(create, range(16)))
    assert {p for p, _ in got} == {ring}
    doc = json.loads(ring.read_text())
    assert {k for _, k in got} == {doc["keys"][0]["id"]}
    assert len(doc["keys"]) == 1 and stat.S_IMODE(ring.stat().st_mode) == 0o600
    assert stat.S_IMODE(ring.parent.stat().st_mode) == 0o700
    assert sorted(p.name for p in ring.parent.iterdir()) == [ring.name]  # no temporary file left
    kid = crypto.current_key_id()
    assert crypto.ensure_keyring() == ring and crypto.current_key_id() == kid
