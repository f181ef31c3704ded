"""Contract check: columns by name, reported by name."""

import pytest

from govlake import ingest, metadata
from govlake.ingest import ContractError


@pytest.fixture
def household():
    return metadata.dataset("public_security.household_registration")


def test_exact_header_passes(household):
    ingest.check_contract(household, household.column_names, "x.csv")


def test_reordered_header_passes(household):
    ingest.check_contract(household, list(reversed(household.column_names)), "x.csv")


def test_missing_column_named(household):
    header = [c for c in household.column_names if c != "婚姻状况"]
    with pytest.raises(ContractError) as e:
        ingest.check_contract(household, header, "landing/x.csv")
    assert e.value.rule == "contract.missing_column"
    assert e.value.columns == ["婚姻状况"]
    assert "婚姻状况" in str(e.value) and "landing/x.csv" in str(e.value)


def test_extra_column_named(household):
    header = household.column_names + ["备注"]
    with pytest.raises(ContractError) as e:
        ingest.check_contract(household, header, "x.csv")
    assert e.value.rule == "contract.unexpected_column"
    assert e.value.columns == ["备注"]
    assert "备注" in str(e.value)


def test_duplicate_column_named(household):
    with pytest.raises(ContractError) as e:
        ingest.check_contract(household, household.column_names + ["姓名"], "x.csv")
    assert e.value.rule == "contract.duplicate_column"
