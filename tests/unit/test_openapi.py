"""The committed OpenAPI document (docs/openapi.json) is the service's contract: it must equal
what the implementation serves, and cover every endpoint with its error responses."""

from __future__ import annotations

import json

from govlake.sharing.service import app as service_app
from govlake.sharing.service.settings import load


def test_committed_openapi_matches_the_implementation(lake):
    served = service_app.openapi_document(load(lake=lake))
    committed = json.loads(service_app.committed_openapi_path().read_text(encoding="utf-8"))
    assert committed == served, "docs/openapi.json is out of date: run `govlake openapi --write`"


def test_every_data_endpoint_documents_its_errors(lake):
    doc = service_app.openapi_document(load(lake=lake))
    assert doc["openapi"].startswith("3.1")
    paths = doc["paths"]
    for path in ("/v1/query", "/v1/verify", "/v1/resources/{resource}/lookup", "/v1/catalog"):
        assert path in paths, path
    for path in ("/v1/query", "/v1/verify", "/v1/resources/{resource}/lookup"):
        responses = paths[path]["post"]["responses"]
        for code in ("401", "403", "422", "429"):
            assert code in responses, (path, code)
            assert "application/problem+json" in responses[code]["content"], (path, code)
    assert paths["/v1/oauth/token"]["post"]["requestBody"]["content"].keys() == {"application/x-www-form-urlencoded"}
