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
from govlake.gate import GateResult, SuiteResult
from govlake.publish import publish
from govlake.sharing import crypto

KEY = bytes.fromhex("00112233445566778899aabbccddeeff" * 2)
SENSITIVE = ("id_number", "name", "birth_date", "address", "phone")  # L3/L4 in access_support


def _publish(lake, rows, run_id, **kw):
    cand = lake.candidate(run_id) / "population_base.parquet"
    cand.parent.mkdir(parents=True, exist_ok=True)
    # uncompressed candidate: a plain copy of it shows every value in its bytes
    pq.write_table(pa.Table.from_pylist(rows), cand, compression="none")
    out = lake.report_dir(run_id, "shared")
    out.mkdir(parents=True, exist_ok=True)
    sr = SuiteResult(model="population_base", suite="shared.population_base", success=True,
                     evaluated=5, failed=[], table=str(cand), row_count=len(rows))
    gr = GateResult(layer="shared", run_id=run_id, success=True, suite_results={"population_base": sr},
                    report_path=out / "report.html", docs_path=out / "docs" / "index.html",
                    json_path=out / "validation.json", seconds=0.1)
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
    monkeypatch.setenv("GOVLAKE_PARQUET_ENCRYPTION", "on")
    return lake, ring, grants_file, dbt


def _files(vdir):
    return sorted(p for p in vdir.rglob("*") if p.is_file())


def _needles(rows):
    return {str(r[c]).encode("utf-8") for r in rows for c in SENSITIVE if r[c] is not None}


def test_without_the_key_no_clear_l3_l4_value_is_readable(env, monkeypatch):
    lake, ring, _, _ = env
    rows = S.people(300)
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
