"""The OpenAPI document: every route, this deployment's limits, one error shape."""

from app.api import openapi_document
from app.settings import Settings
from app.web import ROUTES


def test_every_route_is_documented_and_nothing_else():
    assert set(openapi_document(Settings())["paths"]) == set(ROUTES)


def test_the_limits_are_this_deployments():
    document = openapi_document(Settings(max_events_per_request=7, cache_size=30))
    events = document["paths"]["/events"]["post"]["requestBody"]["content"]["application/json"]
    count = document["paths"]["/popular"]["get"]["parameters"][0]

    assert events["schema"]["oneOf"][1]["properties"]["events"]["maxItems"] == 7
    assert (count["name"], count["schema"]["maximum"]) == ("n", 30)


def test_every_error_answer_has_the_one_error_shape():
    probes = {"/readyz", "/health"}  # their 503 reports the state, like their 200
    errors = [
        answer["content"]["application/json"]["schema"]
        for path, operations in openapi_document(Settings())["paths"].items()
        if path not in probes
        for operation in operations.values()
        for status, answer in operation["responses"].items()
        if int(status) >= 400
    ]

    assert len(errors) > 10
    assert all(schema == {"$ref": "#/components/schemas/Error"} for schema in errors)
