"""schemathesis against the operator API's OpenAPI schema, on a real server: no input it can
generate makes the server answer 500, and every answer matches the schema."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.support.redis_servers import RedisServer
from tests.web_server import WebServer, new_prefix

TOKEN = "schema-" + uuid.uuid4().hex


@pytest.fixture(scope="module")
def web(redis_server: RedisServer) -> Iterator[WebServer]:
    with WebServer(redis_server.url, new_prefix(), token=TOKEN) as server:
        yield server


@pytest.fixture(scope="module")
def api_schema(web: WebServer) -> Any:
    return schemathesis.openapi.from_url(f"{web.base}/openapi.json")


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(
    max_examples=40,  # per operation: bounded, about a minute in all on a busy 2-core machine
    deadline=None,
    derandomize=True,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
)
def test_no_server_error_and_answers_match_the_schema(case: Any, web: WebServer) -> None:
    case.call_and_validate(
        base_url=web.base,
        headers=web.headers,
        timeout=30,
        checks=[
            not_a_server_error,
            status_code_conformance,
            content_type_conformance,
            response_schema_conformance,
        ],
    )
