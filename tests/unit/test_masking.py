"""Masking rules (docs/standards.md §6), keyed join tokens and key handling, and the grading check."""

from __future__ import annotations

import hashlib
import hmac
import os
import stat

import pytest
import yaml

import access_support as S
from govlake import grants, masking, products


# ---- masks ------------------------------------------------------------------------------
@pytest.mark.parametrize("value,internal,expected", [
    ("11010519491231002X", True, "110105********002X"),
    ("11010519491231002x", True, "110105********002X"),
    ("11010519491231002X", False, "1****************X"),
    ("１１０１０５１９４９１２３１００２Ｘ", True, "110105********002X"),  # full-width
])
def test_mask_id_number(value, internal, expected):
    assert masking.mask_id_number(value, internal) == expected


@pytest.mark.parametrize("value,expected", [
    ("13812345678", "138****5678"), ("+86 138-1234-5678", "138****5678"), ("008613812345678", "138****5678"),
])
def test_mask_phone(value, expected):
    assert masking.mask_phone(value) == expected


@pytest.mark.parametrize("value,expected", [
    ("张三", "张*"), ("张小三", "张*三"), ("欧阳明明", "欧**明"), ("阿卜杜拉·艾山", "阿*****山"), ("王", "*"),
])
def test_mask_name(value, expected):
    assert masking.mask_name(value) == expected


@pytest.mark.parametrize("value,expected", [
    ("北京市朝阳区建国路88号", "北京市朝阳区****"),
    ("浙江省杭州市西湖区文三路100号3栋", "浙江省杭州市西湖区****"),
    ("内蒙古自治区呼和浩特市新城区中山东路1号", "内蒙古自治区呼和浩特市新城区****"),
    ("吉林省延边朝鲜族自治州延吉市人民路2号", "吉林省延边朝鲜族自治州延吉市****"),
    ("江苏省昆山市玉山镇前进路小区5号", "江苏省昆山市****"),
    ("某路12号", "****"),
])
def test_mask_address(value, expected):
    assert masking.mask_address(value) == expected


def test_other_masks():
    assert masking.mask_bank_card("6222021234567890123") == "622202*********0123"
    assert masking.mask_email("zhangsan@example.gov.cn") == "z***@example.gov.cn"
    assert masking.mask_birth_date("1949-12-31") == "1949-**-**"
    assert masking.mask("phone", None) is None
    assert masking.default_treatment("id_number") == "mask"
    assert masking.default_treatment("ethnicity_code") == "withhold"


def test_masks_never_return_the_clear_value_over_many_rows():
    for r in S.people(500, seed=3):
        for col in ("id_number", "name", "phone", "address", "birth_date"):
            for internal in (True, False):
                assert masking.mask(col, r[col], internal) != r[col]


# ---- tokens -----------------------------------------------------------------------------
KEY = bytes.fromhex("00112233445566778899aabbccddeeff" * 2)


def test_token_is_keyed_hmac_not_a_plain_hash():
    idn = "11010519491231002X"
    t = masking.token("id_number", idn, KEY, "sha256")
    assert t == "v1:" + hmac.new(KEY, idn.encode(), hashlib.sha256).hexdigest()
    assert t[3:] != hashlib.sha256(idn.encode()).hexdigest()
    assert masking.token("id_number", idn, b"another key 123456", "sha256") != t


def test_token_normalises_before_hashing():
    from stdnum.cn import ric

    up = masking.normalise_id_number("110105491231002")
    assert up == "11010519491231002X" and ric.is_valid(up)  # checked against python-stdnum
    t = masking.token("id_number", up, KEY, "sha256")
    assert masking.token("id_number", "110105491231002", KEY, "sha256") == t  # 15-digit upgraded
    assert masking.token("id_number", " １１０１０５１９４９１２３１００２x ", KEY, "sha256") == t
    assert masking.token("id_number", "11010519491231002x", KEY, "sha256") == \
        masking.token("id_number", "11010519491231002X", KEY, "sha256")
    assert masking.token("phone", "+86 138-1234-5678", KEY, "sha256") == \
        masking.token("phone", "13812345678", KEY, "sha256")


@pytest.mark.skipif("sm3" not in hashlib.algorithms_available, reason="this Python's hashlib has no SM3")
def test_sm3_token_when_available(monkeypatch):
    assert hashlib.new("sm3", b"abc").hexdigest().startswith("66c7f0f4")
    t = masking.token("id_number", "11010519491231002X", KEY, "sm3")
    assert t == "v1sm3:" + hmac.new(KEY, b"11010519491231002X", lambda d=b"": hashlib.new("sm3", d)).hexdigest()
    monkeypatch.setenv("GOVLAKE_TOKEN_ALG", "auto")
    assert masking.token_algorithm() == "sm3"
    monkeypatch.setenv("GOVLAKE_TOKEN_ALG", "sha256")
    assert masking.token_algorithm() == "sha256"


def test_key_from_file_env_or_local_file(tmp_path, monkeypatch):
    monkeypatch.delenv("GOVLAKE_TOKEN_KEY", raising=False)
    monkeypatch.delenv("GOVLAKE_TOKEN_KEY_FILE", raising=False)
    monkeypatch.setenv("GOVLAKE_WORK_DIR", str(tmp_path / "work"))
    with pytest.raises(masking.TokenKeyError, match="no join-token key"):
        masking.load_key()
    path = masking.ensure_local_key()
    assert path == tmp_path / "work" / "secrets" / "token.key"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    k1 = masking.load_key()
    assert len(k1) == 32
    assert masking.ensure_local_key() == path and masking.load_key() == k1  # never overwritten
    monkeypatch.setenv("GOVLAKE_TOKEN_KEY", "ab" * 32)
    assert masking.load_key() == bytes.fromhex("ab" * 32)
    f = tmp_path / "k.hex"
    f.write_text("cd" * 32)
    monkeypatch.setenv("GOVLAKE_TOKEN_KEY_FILE", str(f))
    assert masking.load_key() == bytes.fromhex("cd" * 32)
    f.write_text("not hex")
    with pytest.raises(masking.TokenKeyError, match="hex"):
        masking.load_key()
    monkeypatch.setenv("GOVLAKE_TOKEN_KEY_FILE", str(tmp_path / "missing"))
    with pytest.raises(masking.TokenKeyError, match="no such file"):
        masking.load_key()


def test_no_key_in_the_repository():
    from govlake import config

    root = config.project_root()
    assert not list((root / "config").glob("*.key"))
    ignored = (root / ".gitignore").read_text()
    assert ".work/" in ignored  # the default local key lives in .work/secrets/


# ---- grading check ----------------------------------------------------------------------
def _doc():
    return yaml.safe_load(S.SHARED_MODELS_YAML)


def _write(tmp_path, doc):
    return S.write_dbt_dir(tmp_path, yaml.safe_dump(doc, allow_unicode=True))


def test_products_load_with_grades(tmp_path):
    p = products.load(S.write_dbt_dir(tmp_path))
    pop = p["population_base"]
    assert pop.title == "人口基础库" and pop.sharing_type == "有条件共享"
    assert pop.column("id_number").grade == "L4" and pop.column("id_number").element == "id_number"
    assert pop.grade == "L4"  # the most restrictive column


def test_grading_check_fails_on_ungraded_column(tmp_path):
    doc = _doc()
    del doc["models"][0]["columns"][2]["config"]["meta"]["grade"]  # population_base.gender_code
    with pytest.raises(products.ProductMetadataError) as exc:
        products.load(_write(tmp_path, doc))
    msg = str(exc.value)
    assert "population_base" in msg and "gender_code" in msg and "no grade" in msg
    assert "_shared__models.yml" in msg


def test_grading_check_fails_on_column_without_any_meta(tmp_path):
    doc = _doc()
    doc["models"][1]["columns"].append({"name": "latest_event_type"})
    with pytest.raises(products.ProductMetadataError, match="marriage_household_check.*latest_event_type"):
        products.load(_write(tmp_path, doc))


def test_grading_check_fails_on_bad_grade_or_sharing_type(tmp_path):
    doc = _doc()
    doc["models"][0]["columns"][0]["config"]["meta"]["grade"] = "L5"
    with pytest.raises(products.ProductMetadataError, match="population_base.*id_number.*L5"):
        products.load(_write(tmp_path, doc))
    doc = _doc()
    del doc["models"][1]["config"]["meta"]["sharing_type"]
    with pytest.raises(products.ProductMetadataError, match="marriage_household_check.*no sharing_type"):
        products.load(_write(tmp_path, doc))
    doc = _doc()
    del doc["models"][2]["config"]["meta"]["legal_basis"]
    with pytest.raises(products.ProductMetadataError, match="secret_registry.*legal_basis"):
        products.load(_write(tmp_path, doc))


def test_real_product_metadata_is_graded_when_present():
    """The repository's own product YAML passes the grading check (once it exists)."""
    from govlake import config

    files = [f for f in products.model_files(config.dbt_project_dir())
             if "product" in f.read_text(encoding="utf-8")]
    if not files:
        pytest.skip("no product metadata in dbt_project/models yet")
    found = products.check()
    assert found, "product YAML present but no model has meta product: true"


# ---- grants -----------------------------------------------------------------------------
def test_reviewed_grants_file_is_valid():
    roles = grants.load()  # config/grants.yml
    assert {"ga_population_analyst", "mz_marriage_analyst", "tj_public_statistics"} <= set(roles)
    assert roles["tj_public_statistics"].clearance == "L1"
    assert any(r.expired() for r in roles.values()), "keep one expired role as an example"


def test_grants_reject_clear_override(tmp_path):
    p = S.write_grants(tmp_path, S.GRANTS_YAML.replace("{id_number: token}", "{id_number: clear}"))
    with pytest.raises(grants.GrantError, match="mz_analyst.*id_number.*clear"):
        grants.load(p)
