"""The dataset metadata (dbt source YAML) parses and is complete."""

import re

from govlake import metadata

EXPECTED = {
    "public_security.household_registration",
    "civil_affairs.marriage_registration",
    "human_resources.social_insurance",
    "tax.taxpayer_registration",
    "market_regulation.enterprise_registration",
    "health.birth_certificate",
}


def test_six_feeds_declared():
    assert {d.id for d in metadata.datasets()} == EXPECTED


def test_every_column_has_element_standard_and_grade():
    for d in metadata.datasets():
        elements = [c.element for c in d.columns]
        assert len(elements) == len(set(elements)), f"{d.id}: a data element is mapped twice"
        for c in d.columns:
            assert re.fullmatch(r"[a-z][a-z0-9_]*", c.element), f"{d.id}.{c.name}: element must be ASCII"
            assert c.grade in metadata.GRADES, f"{d.id}.{c.name}: grade {c.grade!r}"


def test_schedule_follows_update_cycle():
    assert metadata.dataset("tax.taxpayer_registration").schedule == "@weekly"
    assert metadata.dataset("public_security.household_registration").schedule == "@daily"


def test_household_columns_in_delivery_order():
    d = metadata.dataset("public_security", "household_registration")
    assert d.column_names[:3] == ["公民身份号码", "姓名", "性别"]
    assert d.encoding == "gb18030" and d.format == "csv"
