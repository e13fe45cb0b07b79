"""The HTTP API's description: an OpenAPI 3.1 document built from the request and response
schemas below and the limits of one settings object, served at ``GET /openapi.json``.

The schemas say what a client may send and what it gets back; ``app.validation`` holds the
rules a schema cannot state (printable characters, dates) and names the field it refuses.
schemathesis checks every answer of a live worker against this document (tests/integration).
"""

from __future__ import annotations

from typing import Any

from app.settings import Settings
from app.validation import (
    MAX_ACTION_LENGTH,
    MAX_EVENT_ID_LENGTH,
    MAX_LABEL_LENGTH,
    MAX_LABELS,
    MAX_RECOMMENDATION_ID_LENGTH,
    MAX_TEXT_LENGTH,
    SESSION_ACTION,
)

Schema = dict[str, Any]

ERROR: Schema = {
    "type": "object",
    "description": "Every error: what is wrong, and for a refused event or item which one.",
    "required": ["error"],
    "properties": {
        "error": {"type": "string"},
        "index": {"type": "integer", "minimum": 0, "description": "position in the request"},
        "field": {"type": "string"},
        "problem": {"type": "string"},
    },
}
SCORED: Schema = {
    "type": "object",
    "required": ["item_id", "score"],
    "properties": {
        "item_id": {"type": "string"},
        "score": {"type": "number"},
        "title": {"type": ["string", "null"], "description": "with ?fields=title"},
    },
}
FIELDS: Schema = {
    "name": "fields",
    "in": "query",
    "description": "title: add each item's catalogue title (null when it has none)",
    "schema": {"enum": ["title"]},
}
ACCEPTED: Schema = {
    "type": "object",
    "required": ["accepted"],
    "properties": {"accepted": {"type": "integer", "minimum": 1}},
}
ESTIMATE: Schema = {
    "type": ["object", "null"],
    "description": "null before anything was counted",
    "properties": {
        "value": {"type": "number"},
        "low": {"type": "number"},
        "high": {"type": "number"},
    },
}
EXPERIMENT_REPORT: Schema = {
    "type": "object",
    "required": ["experiment", "confidence", "arms"],
    "properties": {
        "experiment": {"type": "string", "description": "RECSYS_EXPERIMENT_NAME"},
        "confidence": {"type": "number"},
        "arms": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["arm", "share", "fold_in", "served", "answered", "trials", "hits"],
                "properties": {
                    "arm": {"type": "string"},
                    "share": {"type": "number", "description": "fraction of the users"},
                    "fold_in": {"type": "boolean"},
                    "served": {"type": "integer", "description": "lists served"},
                    "answered": {
                        "type": "integer",
                        "description": "positive events carrying a recommendation_id of the arm",
                    },
                    "trials": {"type": "integer", "description": "live HR@10 trials"},
                    "hits": {"type": "integer"},
                    "hit_rate_at_10": {**ESTIMATE, "description": "Wilson interval"},
                    "click_through": {
                        **ESTIMATE,
                        "description": "answered per list served; exact Poisson interval",
                    },
                    "hit_rate_vs_control": {
                        **ESTIMATE,
                        "description": "HR@10 minus the first arm's; normal interval",
                    },
                },
            },
        },
    },
}
MODEL_VERSION: Schema = {"type": ["string", "null"], "description": "null before the first fit"}


def _identifier(max_length: int) -> Schema:
    return {"type": "string", "minLength": 1, "maxLength": max_length}


def _batch(entry: Schema, key: str, limit: int) -> Schema:
    """One entry, or ``{key: [entries]}`` with at most ``limit`` of them (all or nothing)."""
    return {
        "oneOf": [
            entry,
            {
                "type": "object",
                "required": [key],
                "properties": {
                    key: {"type": "array", "items": entry, "minItems": 1, "maxItems": limit}
                },
            },
        ]
    }


def _event(settings: Settings) -> Schema:
    ids = _identifier(settings.max_id_length)
    return {
        "type": "object",
        "required": ["user_id", "item_id", "action"],
        "properties": {
            "user_id": ids,
            "item_id": ids,
            "action": {
                **_identifier(MAX_ACTION_LENGTH),
                "description": "weighted by RECSYS_ACTION_WEIGHTS: "
                + ", ".join(
                    f"{name} {weight:g}" for name, weight in settings.action_weights.items()
                )
                + f"; any other action {settings.default_weight:g}. A negative weight "
                "takes the item out of the user's positives; `impression` records a showing "
                "(no weight): an item shown RECSYS_IMPRESSION_LIMIT times without an action "
                "on it is demoted in the user's lists",
            },
            "timestamp": {
                "type": ["number", "string"],
                "description": "epoch seconds or ISO-8601; the time of acceptance when absent",
            },
            "event_id": {
                **_identifier(MAX_EVENT_ID_LENGTH),
                "description": "a re-sent event with the same id is counted once",
            },
            "recommendation_id": {
                **_identifier(MAX_RECOMMENDATION_ID_LENGTH),
                "description": "the recommendation_id of the list this action answers "
                "(GET /recommend/{user_id}): counted in its arm's click-through",
            },
        },
    }


def _session(settings: Settings) -> Schema:
    """``POST /recommend``'s body: the visitor's actions, oldest first, at most the items a
    user's state keeps."""
    entry = {
        "oneOf": [
            _identifier(settings.max_id_length),
            {
                "type": "object",
                "required": ["item_id"],
                "properties": {
                    "item_id": _identifier(settings.max_id_length),
                    "action": {**_identifier(MAX_ACTION_LENGTH), "default": SESSION_ACTION},
                },
            },
        ]
    }
    return {
        "type": "object",
        "required": ["items"],
        "properties": {
            "items": {
                "type": "array",
                "items": entry,
                "minItems": 1,
                "maxItems": settings.max_items_per_user,
            }
        },
    }


def _item(settings: Settings) -> Schema:
    text = {"type": ["string", "null"], "maxLength": MAX_TEXT_LENGTH}
    labels = {
        "type": ["array", "null"],
        "items": _identifier(MAX_LABEL_LENGTH),
        "maxItems": MAX_LABELS,
    }
    return {
        "type": "object",
        "required": ["item_id"],
        "properties": {
            "item_id": _identifier(settings.max_id_length),
            "title": text,
            "description": text,
            "categories": labels,
            "tags": labels,
            "available": {"type": "boolean", "description": "false hides it from every list"},
            "hidden_until": {
                "type": ["number", "string", "null"],
                "description": "epoch seconds or ISO-8601: in no list until then",
            },
        },
    }


def _stored_item(settings: Settings) -> Schema:
    """An item as ``GET /items/{item_id}`` answers it: every field, defaults filled in."""
    item = _item(settings)
    text = {"type": "string", "maxLength": MAX_TEXT_LENGTH}
    labels = {"type": "array", "items": _identifier(MAX_LABEL_LENGTH), "maxItems": MAX_LABELS}
    fields = {
        "title": text,
        "description": text,
        "categories": labels,
        "tags": labels,
        "hidden_until": {"type": ["number", "null"], "description": "epoch seconds"},
    }
    properties = {**item["properties"], **fields}
    return {**item, "required": list(properties), "properties": properties}


def _body(schema: Schema) -> Schema:
    """A required JSON request body of this schema."""
    return {"required": True, "content": {"application/json": {"schema": schema}}}


def _json(schema: Schema, description: str) -> Schema:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _html(description: str) -> Schema:
    return {"description": description, "content": {"text/html": {"schema": {"type": "string"}}}}


def _errors(*statuses: int) -> dict[str, Schema]:
    reasons = {
        400: "a parameter or the body is invalid; the message names it",
        401: "the API key is missing or wrong",
        404: "nothing is known under this id, or no such path",
        408: "the body did not arrive in time",
        409: "the request conflicts with the state: what it needs is not there; the message "
        "says what",
        413: "the body is larger than RECSYS_MAX_BODY_BYTES",
        503: "Kafka or Redis is unavailable, or no worker holds this user now; retry after the "
        "Retry-After header's seconds",
    }
    return {
        str(status): _json({"$ref": "#/components/schemas/Error"}, reasons[status])
        for status in statuses
    }


def _count(settings: Settings) -> Schema:
    return {
        "name": "n",
        "in": "query",
        "description": "how many items",
        "schema": {"type": "integer", "minimum": 1, "maximum": settings.cache_size, "default": 10},
    }


def _path(name: str, settings: Settings) -> Schema:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "schema": _identifier(settings.max_id_length),
    }


def _ranked(**properties: Schema) -> Schema:
    items = {"type": "array", "items": SCORED}
    return {
        "type": "object",
        "required": ["items", *properties],
        "properties": {"items": items, **properties},
    }


def _write(entry: Schema, key: str, limit: int, what: str) -> Schema:
    return {
        "requestBody": _body(_batch(entry, key, limit)),
        "responses": {
            "202": _json(ACCEPTED, f"Kafka acknowledged every {what} (acks=all)"),
            **_errors(400, 401, 408, 413, 503),
        },
    }


def openapi_document(settings: Settings) -> Schema:
    """The API as OpenAPI 3.1, with this deployment's limits and weights."""
    user_path, item_path, count = (
        _path("user_id", settings),
        _path("item_id", settings),
        _count(settings),
    )
    list_filters = [
        count,
        FIELDS,
        {
            "name": "exclude",
            "in": "query",
            "schema": {"type": "string"},
            "description": "comma-separated item ids to leave out",
        },
        {
            "name": "category",
            "in": "query",
            "schema": {"type": "string"},
            "description": "only items of this category",
        },
    ]
    health = {
        "type": "object",
        "required": ["status", "recovered", "redis", "model_version"],
        "properties": {
            "status": {"enum": ["ready", "starting"]},
            "recovered": {"type": "boolean"},
            "redis": {"type": "boolean"},
            "model_version": MODEL_VERSION,
            "last_check": {
                "type": ["object", "null"],
                "description": "the trainer's last check of a candidate model against the "
                "serving one on held-out interactions (null before the first, or while Redis "
                "is down)",
                "required": ["version", "accepted", "candidate", "serving", "users", "pairs"],
                "properties": {
                    "version": {"type": "string"},
                    "accepted": {"type": "boolean"},
                    "candidate": {"type": "object"},
                    "serving": {"type": "object"},
                    "users": {"type": "integer"},
                    "pairs": {"type": "integer"},
                    "margin": {"type": "number"},
                    "at": {"type": "number"},
                },
            },
            "candidates_refused": {"type": "integer"},
            "last_rollback": {
                "type": ["object", "null"],
                "description": "the trainer's last automatic rollback: the version rolled back, "
                "the one now served, and both models' live HR@10 and trials",
            },
        },
    }
    readiness = {
        "type": "object",
        "required": ["status", "recovered"],
        "properties": {
            "status": {"enum": ["ready", "recovering"]},
            "recovered": {"type": "boolean"},
        },
    }
    interactions = {
        "type": "object",
        "additionalProperties": {
            "type": "object",
            "required": ["weight", "count", "last_at"],
            "properties": {
                "weight": {"type": "number"},
                "count": {"type": "integer"},
                "last_at": {"type": "number"},
            },
        },
    }
    play_status = {
        "type": "object",
        "required": ["playing"],
        "properties": {
            "playing": {"type": "boolean"},
            "total": {"type": "integer"},
            "sent": {"type": "integer"},
            "events_per_second": {"type": "number"},
            "started_at": {"type": "number"},
            "finished_at": {"type": ["number", "null"]},
            "error": {"type": ["string", "null"]},
        },
    }
    paths: dict[str, Schema] = {
        "/events": {
            "post": {
                "summary": "Post one event or a batch; 202 once Kafka acknowledged all of them",
                **_write(_event(settings), "events", settings.max_events_per_request, "event"),
            }
        },
        "/items": {
            "post": {
                "summary": "Add or update catalogue items (via topic items)",
                **_write(_item(settings), "items", settings.max_items_per_request, "item"),
            }
        },
        "/items/{item_id}": {
            "get": {
                "summary": "One catalogue item as stored",
                "parameters": [item_path],
                "responses": {
                    "200": _json(_stored_item(settings), "the item"),
                    **_errors(400, 401, 404, 503),
                },
            },
            "delete": {
                "summary": "Withdraw an item: kept, marked unavailable, shown in no list again",
                "parameters": [item_path],
                "responses": {
                    "202": _json(ACCEPTED, "Kafka has the withdrawal; it applies within a second"),
                    **_errors(400, 401, 503),
                },
            },
        },
        "/recommend": {
            "post": {
                "summary": "An anonymous visitor's list from their recent actions; nothing stored",
                "parameters": list_filters,
                "requestBody": _body(_session(settings)),
                "responses": {
                    "200": _json(
                        _ranked(
                            source={"enum": ["personal", "popular", "content"]},
                            model_version=MODEL_VERSION,
                            event_count={
                                "type": "integer",
                                "description": "how many actions the list reflects",
                            },
                        ),
                        "the list, best first, as a user who did the same actions gets it",
                    ),
                    **_errors(400, 413),
                },
            }
        },
        "/recommend/{user_id}": {
            "get": {
                "summary": "A user's top-N list: personal, or popular/content for a new user",
                "parameters": [user_path, *list_filters],
                "responses": {
                    "200": _json(
                        _ranked(
                            user_id={"type": "string"},
                            source={"enum": ["personal", "popular", "content"]},
                            model_version=MODEL_VERSION,
                            updated_at={"type": "number", "description": "epoch seconds"},
                            event_count={
                                "type": ["integer", "null"],
                                "description": "how many of the user's events the list reflects",
                            },
                            arm={
                                "type": "string",
                                "description": "the experiment arm the user is dealt into "
                                "(RECSYS_EXPERIMENT_ARMS; default without an experiment)",
                            },
                            recommendation_id={
                                "type": "string",
                                "description": "this list's id, naming its arm: send it with "
                                "the events that answer the list",
                            },
                        ),
                        "the list, best first",
                    ),
                    **_errors(400, 401, 404, 503),
                },
            }
        },
        "/users/{user_id}": {
            "get": {
                "summary": "The interactions accumulated for a user, read on the worker holding it",
                "parameters": [user_path],
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "required": [
                                "user_id",
                                "event_count",
                                "last_event_at",
                                "interactions",
                                "hidden",
                                "impressions",
                            ],
                            "properties": {
                                "user_id": {"type": "string"},
                                "event_count": {"type": "integer"},
                                "last_event_at": {"type": "number"},
                                "interactions": interactions,
                                "hidden": {
                                    "type": "array",
                                    "items": {"type": "string"},
                                    "description": "items the user hid, oldest hide first",
                                },
                                "impressions": {
                                    "type": "object",
                                    "additionalProperties": {"type": "integer"},
                                    "description": "item -> times shown (impression actions) "
                                    "since the user's last action on it, least recently shown "
                                    "first; at RECSYS_IMPRESSION_LIMIT it is demoted",
                                },
                            },
                        },
                        "weight, count and last time per item",
                    ),
                    **_errors(400, 401, 404, 503),
                },
            },
            "delete": {
                "summary": "Erase a user: state, held history and cached list; a replay keeps "
                "them erased",
                "parameters": [user_path],
                "responses": {
                    "202": _json(ACCEPTED, "Kafka has the erasure; it applies within a batch"),
                    **_errors(400, 401, 503),
                },
            },
        },
        "/users/{user_id}/hidden": {
            "post": {
                "summary": "Hide items from a user's lists, until shown again; a replay keeps "
                "them hidden",
                "parameters": [user_path],
                "requestBody": _body(
                    {
                        "type": "object",
                        "required": ["items"],
                        "properties": {
                            "items": {
                                "type": "array",
                                "items": _identifier(settings.max_id_length),
                                "minItems": 1,
                                "maxItems": settings.max_items_per_request,
                            }
                        },
                    }
                ),
                "responses": {
                    "202": _json(ACCEPTED, "Kafka has the hide; it applies within a batch"),
                    **_errors(400, 401, 408, 413, 503),
                },
            }
        },
        "/users/{user_id}/hidden/{item_id}": {
            "delete": {
                "summary": "Show a hidden item in the user's lists again",
                "parameters": [user_path, item_path],
                "responses": {
                    "202": _json(ACCEPTED, "Kafka has it; it applies within a batch"),
                    **_errors(400, 401, 503),
                },
            }
        },
        "/popular": {
            "get": {
                "summary": "Trending items by time-decayed action weight",
                "parameters": [
                    count,
                    FIELDS,
                    {
                        "name": "half_life",
                        "in": "query",
                        "description": "seconds: RECSYS_POPULARITY_HALF_LIFE or one of "
                        "RECSYS_TRENDING_HALF_LIVES",
                        "schema": {"enum": [f"{value:g}" for value in settings.half_lives]},
                    },
                ],
                "responses": {
                    "200": _json(
                        _ranked(
                            half_life_seconds={"type": "number"},
                            as_of={
                                "type": "number",
                                "description": "unix seconds the scores are decayed to: the "
                                "newest event time seen (RECSYS_POPULARITY_CLOCK=stream) or "
                                "the worker's clock (wall)",
                            },
                        ),
                        "best first",
                    ),
                    **_errors(400, 401),
                },
            }
        },
        "/users/{user_id}/similar": {
            "get": {
                "summary": "Users of like taste: the closest by cosine of their ALS factors",
                "description": "The user's vector is solved now from their state; the others "
                "are those of the last full fit (RECSYS_USER_NEIGHBOURS).",
                "parameters": [user_path, count],
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "required": ["user_id", "users", "model_version"],
                            "properties": {
                                "user_id": {"type": "string"},
                                "users": {
                                    "type": "array",
                                    "items": {
                                        "type": "object",
                                        "required": ["user_id", "score"],
                                        "properties": {
                                            "user_id": {"type": "string"},
                                            "score": {"type": "number"},
                                        },
                                    },
                                },
                                "model_version": {"type": "string"},
                            },
                        },
                        "closest first",
                    ),
                    **_errors(400, 401, 404, 503),
                },
            }
        },
        "/similar/{item_id}": {
            "get": {
                "summary": "Items closest to an item by ALS factors, or by catalogue content",
                "parameters": [item_path, count, FIELDS],
                "responses": {
                    "200": _json(
                        _ranked(
                            item_id={"type": "string"},
                            source={"enum": ["factors", "content"]},
                            model_version=MODEL_VERSION,
                        ),
                        "best first",
                    ),
                    **_errors(400, 401, 404),
                },
            }
        },
        "/demo/play": {
            "get": {
                "summary": "How far the demo's play of the bundled history is",
                "responses": {"200": _json(play_status, "the current or last play")},
            },
            "post": {
                "summary": "Play the shop: replay the bundled history through POST /events",
                "description": "At events_per_second, moved in time to continue from the "
                "shop's clock (GET /popular's as_of). One play at a time per worker.",
                "requestBody": _body(
                    {
                        "type": "object",
                        "required": ["events_per_second"],
                        "properties": {
                            "events_per_second": {
                                "type": "number",
                                "minimum": 1,
                                "maximum": 1000,
                            }
                        },
                    }
                ),
                "responses": {
                    "202": _json(play_status, "the play has started"),
                    "404": _json(
                        {"$ref": "#/components/schemas/Error"},
                        "the history to play (RECSYS_DEMO_EVENTS) cannot be read",
                    ),
                    "409": _json({"$ref": "#/components/schemas/Error"}, "a play is running"),
                    **_errors(400, 401, 408, 413, 503),
                },
            },
            "delete": {
                "summary": "Stop the demo's play; what was sent stays sent",
                "responses": {"200": _json(play_status, "the play as it stopped"), **_errors(401)},
            },
        },
        "/admin/retrain": {
            "post": {
                "summary": "Ask the deployment's trainer for a full fit now",
                "responses": {
                    "202": _json(
                        {
                            "type": "object",
                            "required": ["requested", "model_version"],
                            "properties": {
                                "requested": {"const": True},
                                "model_version": MODEL_VERSION,
                            },
                        },
                        "the fit is requested",
                    ),
                    **_errors(401, 503),
                },
            }
        },
        "/admin/rollback": {
            "post": {
                "summary": "Serve the model published before the current one again; every "
                "worker switches within a second",
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "required": ["rolled_back", "model_version"],
                            "properties": {
                                "rolled_back": {"const": True},
                                "model_version": {"type": "string"},
                            },
                        },
                        "the earlier model is current",
                    ),
                    **_errors(401, 409, 503),
                },
            }
        },
        "/experiments": {
            "get": {
                "summary": "Each experiment arm's live HR@10 and click-through, with 95% "
                "intervals, over every worker",
                "responses": {
                    "200": _json(EXPERIMENT_REPORT, "the arms, the control first"),
                    **_errors(401, 503),
                },
            }
        },
        "/livez": {
            "get": {
                "summary": "Liveness probe: the process answers",
                "responses": {
                    "200": _json(
                        {"type": "object", "properties": {"status": {"const": "live"}}}, "live"
                    )
                },
            }
        },
        "/readyz": {
            "get": {
                "summary": "Readiness probe: the tables have recovered (Redis is not asked)",
                "responses": {
                    "200": _json(readiness, "ready"),
                    "503": _json(readiness, "recovering; retry after Retry-After"),
                },
            }
        },
        "/health": {
            "get": {
                "summary": "Recovered and Redis answering (a dashboard's view, not a probe)",
                "responses": {"200": _json(health, "ready"), "503": _json(health, "not ready")},
            }
        },
        "/": {
            "get": {
                "summary": "The demo page: a user's list, trending and similar items, live",
                "responses": {"200": _html("the page")},
            }
        },
        "/docs": {
            "get": {
                "summary": "This document, read in Swagger UI",
                "responses": {"200": _html("the page")},
            }
        },
        "/openapi.json": {
            "get": {
                "summary": "This document",
                "responses": {"200": _json({"type": "object"}, "OpenAPI 3.1")},
            }
        },
        "/metrics": {
            "get": {
                "summary": "This worker's metrics in the Prometheus text format",
                "responses": {
                    "200": {
                        "description": "metrics",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    },
                    **_errors(401),
                },
            }
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Real-time recommender",
            "version": "1",
            "description": 'Events in, top-N lists out. Errors are one shape: `{"error": ...}`.',
        },
        "paths": paths,
        "components": {
            "schemas": {"Error": ERROR},
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
            },
        },
        "security": [{}, {"bearer": []}, {"apiKey": []}],
    }
