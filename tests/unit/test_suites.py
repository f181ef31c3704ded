"""The reviewed GX suites in expectations/ name only columns their model has."""

from __future__ import annotations

import json

import pytest

from govlake import gate, metadata

LINEAGE = {"_batch_id", "_source_file", "_source_sha256", "_row_number", "_delivery_date"}
QUARANTINE = {"dept", "dataset", "_batch_id", "_source_file", "_row_number", "rule", "column",
              "original_value", "message"}
SHARED = {
    "population_base": {"id_number", "name", "gender_code", "birth_date", "ethnicity_code",
                        "division_code", "address", "marital_status_code", "phone",
                        "in_household_registration", "known_by", "department_count"},
    "legal_entity_base": {"uscc", "enterprise_name", "enterprise_type", "legal_rep_name",
                          "legal_rep_id_number", "establishment_date", "registered_capital_10k_cny",
                          "address", "registration_status", "taxpayer_name", "tax_registration_date",
                          "credit_rating", "tax_authority", "in_market_regulation", "in_tax"},
    "marriage_household_check": {"id_number", "name", "household_status_code", "derived_status_code",
                                 "latest_event_type", "latest_event_date", "certificate_number"},
}


def model_columns() -> dict[tuple[str, str], set[str]]:
    out = {("standardized", f"stg_{d.dept}__{d.name}"): {c.element for c in d.columns} | LINEAGE
           for d in metadata.datasets()}
    out[("standardized", "quarantine_rows")] = QUARANTINE
    out.update({("shared", k): v for k, v in SHARED.items()})
    return out


def test_every_model_has_a_suite():
    found = {(layer, m) for layer, ms in gate.list_suites().items() for m in ms}
    assert set(model_columns()) <= found, set(model_columns()) - found


def all_suites() -> list[tuple[str, str]]:
    return sorted((layer, m) for layer, ms in gate.list_suites().items() for m in ms)


@pytest.mark.parametrize("layer, model", all_suites())
def test_suite_is_self_consistent(layer, model):
    """Suites of other products (e.g. ops' department_connectivity): every column an
    expectation names is in the suite's own declared column set."""
    doc = gate.load_suite_json(layer, model)
    assert doc["name"] == f"{layer}.{model}"
    declared = [set(e["kwargs"]["column_set"]) for e in doc["expectations"]
                if e["type"] == "expect_table_columns_to_match_set"]
    assert len(declared) == 1, f"{gate.suite_path(layer, model)}: declare the columns once"
    assert gate.suite_columns(doc) <= declared[0]


@pytest.mark.parametrize("layer, model", sorted(model_columns()))
def test_suite_names_only_existing_columns(layer, model):
    doc = gate.load_suite_json(layer, model)
    assert doc["name"] == f"{layer}.{model}"
    unknown = gate.suite_columns(doc) - model_columns()[(layer, model)]
    assert not unknown, f"{gate.suite_path(layer, model)} names columns {model} lacks: {unknown}"


@pytest.mark.parametrize("layer, model", all_suites())
def test_suite_is_valid_gx(layer, model):
    suite = gate._build_suite(gate.load_suite_json(layer, model))
    assert len(suite.expectations) >= 3
    types = {e.expectation_type for e in suite.expectations}
    assert "expect_table_columns_to_match_set" in types
    for e in gate.load_suite_json(layer, model)["expectations"]:
        for v in e["kwargs"].values():  # only declared suite parameters
            if isinstance(v, dict) and "$PARAMETER" in v:
                assert v["$PARAMETER"] in gate.SUITE_PARAMETERS


def test_required_source_columns_are_not_null_in_staging():
    for d in metadata.datasets():
        doc = gate.load_suite_json("standardized", f"stg_{d.dept}__{d.name}")
        not_null = {e["kwargs"]["column"] for e in doc["expectations"]
                    if e["type"] == "expect_column_values_to_not_be_null"}
        missing = {c.element for c in d.columns if c.required} - not_null
        assert not missing, f"{d.id}: required columns without a not-null expectation: {missing}"


def test_suite_files_are_plain_reviewed_json():
    for layer, m in all_suites():
        p = gate.suite_path(layer, m)
        text = p.read_text(encoding="utf-8")
        assert json.loads(text)["meta"]["notes"], f"{p}: needs meta.notes"
        assert text.endswith("\n")
