"""The served ``/openapi.json`` against the server's behaviour, fuzzed by schemathesis.

A real uvicorn serves the demo flow with no pacing; schemathesis (4.x) loads
the document from the socket and generates requests for every operation,
schema-valid (positive) and schema-violating (negative). Every answer must be
below 500, documented (status, content type, body schema), and every error
must be the JSON ``{"error": {"code", "message"}}`` of the wire contract (docs/wire-protocol.md).

schemathesis is synchronous (requests) and the server shares the test's
event loop, so the fuzzing runs in a worker thread.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import httpx
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings

from icefloe.core.sse import SseParser
from icefloe.demo import Pacing, build_demo_flow
from icefloe.transport.app import EdgeSettings
from icefloe.transport.limits import EdgeLimits

Serve = Any  # the serve fixture of conftest.py: serve(flow, settings=None) -> url

#: examples per operation and generation mode
EXAMPLES = 30
#: the whole fuzz run, seconds
BUDGET_S = 60
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    # No shrinking: a failure is reported as found, which keeps the run bounded.
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
)
#: no rate or connection limit: the fuzzer is one client making hundreds of calls
UNLIMITED = EdgeSettings(edge_limits=EdgeLimits(requests_per_s=None, max_connections=None))
STREAM_OPERATIONS = (
    "GET /v1/streams/{stream_id}",
    "GET /v1/streams/{stream_id}/status",
    "GET /v1/streams/{stream_id}/poll",
    "DELETE /v1/streams/{stream_id}",
)


def json_error_body(ctx: Any, response: Any, case: Any) -> None:
    """Every 4xx/5xx answer is ``{"error": {"code": str, "message": str}}`` in JSON."""
    if response.status_code < 400:
        return
    headers = {k.lower(): v for k, v in response.headers.items()}
    content_type = headers.get("content-type", [""])[0]
    assert content_type.startswith("application/json"), (response.status_code, content_type)
    body = json.loads(response.content)
    assert set(body) == {"error"}, body
    assert isinstance(body["error"].get("code"), str), body
    assert isinstance(body["error"].get("message"), str), body


def sse_events_are_chunks(ctx: Any, response: Any, case: Any) -> None:
    """A 200 SSE body is chunk events (id = seq, in order) ending in ``end`` or ``error``."""
    headers = {k.lower(): v for k, v in response.headers.items()}
    if response.status_code != 200 or not headers.get("content-type", [""])[0].startswith(
        "text/event-stream"
    ):
        return
    if case.path == "/v1/events":
        # Its events carry cursors, topic events and per-source errors (its
        # own shape, tested in test_http_events.py), and a topic it follows
        # may send nothing before the read timeout cuts the body.
        return
    parser = SseParser()
    parser.feed_data(response.content)
    events = parser.events_received()
    assert events, response.content[:200]
    if headers.get("x-vercel-ai-ui-message-stream") == ["v1"]:
        # /v1/chat (docs/ai-sdk.md): JSON parts from "start", [DONE] last. The
        # body may be cut short: schemathesis reads a streaming body only so far.
        data = [ev.data for ev in events]
        assert "[DONE]" not in data[:-1], data
        parts = [json.loads(d) for d in data if d != "[DONE]"]
        assert parts[0]["type"] == "start", parts[0]
        assert all(isinstance(p.get("type"), str) for p in parts), parts
        return
    for ev in events[:-1]:
        assert ev.event == "chunk", ev
    for ev in events:
        data = json.loads(ev.data)
        if ev.event == "error":
            assert ev is events[-1], events
            assert set(data) == {"code", "message"}, data
            continue
        assert ev.id == str(data["seq"]), ev
        assert isinstance(data["stream_id"], str), data
        assert isinstance(data["text"], str), data
        assert data["done"] is (ev.event == "end"), ev
    seqs = [int(ev.id) for ev in events if ev.id is not None]
    if seqs:
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), seqs


def fuzz(base_url: str, sid: str) -> list[str]:
    """Run every operation in both modes; the failures, one text each."""
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import (
        content_type_conformance,
        response_headers_conformance,
        response_schema_conformance,
        status_code_conformance,
    )

    def body_schema_conformance(ctx: Any, response: Any, case: Any) -> bool | None:
        # schemathesis reads an OpenAPI 3.1 `schema` under text/event-stream as the
        # schema of each event (object), while openapi.py documents the whole body as a
        # string; SSE bodies are checked by sse_events_are_chunks instead.
        headers = {k.lower(): v for k, v in response.headers.items()}
        if headers.get("content-type", [""])[0].startswith("text/event-stream"):
            return None
        return response_schema_conformance(ctx, response, case)

    checks = [
        not_a_server_error,
        status_code_conformance,
        content_type_conformance,
        response_headers_conformance,
        body_schema_conformance,
        json_error_body,
        sse_events_are_chunks,
    ]
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json", timeout=10)
    operations = [result.ok() for result in schema.get_all_operations()]
    labels = {op.label for op in operations}
    assert labels >= {"POST /v1/streams", "GET /v1/streams", *STREAM_OPERATIONS}, labels
    # Random ids only reach 404s; the real stream reaches the handlers' other branches.
    variants: list[tuple[Any, dict[str, Any]]] = [
        (op, {"path_parameters": {"stream_id": sid}})
        for op in operations
        if op.label in STREAM_OPERATIONS
    ]
    # A topic subscription streams until the client leaves: every request would
    # wait out the read timeout, so it is tested in test_hub_edge.py instead.
    variants += [(op, {}) for op in operations if op.label != "GET /v1/topics/{pattern}"]
    failures: list[str] = []
    for op, fixed in variants:
        for mode in (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE):

            @FUZZ
            @given(case=op.as_strategy(generation_mode=mode, **fixed))
            def run(case: Any) -> None:
                # The read timeout bounds a streaming body; the demo's streams are short.
                response = case.call(base_url=base_url, timeout=10)
                case.validate_response(response, checks=checks)

            try:
                run()
            except (Exception, BaseExceptionGroup) as exc:  # schemathesis' FailureGroup
                failures.append(f"{op.label} {mode.value} {fixed}:\n{exc}")
    return failures


def schema_flow() -> Any:
    """The demo flow with load shedding off.

    The fuzzer's request burst lags the shared loop on a small machine, and a
    congested flow throttles new low-priority streams and refuses them (503
    overloaded) past the throttle's longest delay: correct under load, but a
    5xx that schemathesis counts as a server error. This test is about the
    schema; shedding has its own tests (test_http_load.py, test_load_response.py).
    """
    return build_demo_flow(Pacing(0, 0), congestion=None)


async def test_every_operation_conforms_to_the_served_schema(serve: Serve) -> None:
    started = time.monotonic()
    async with (
        asyncio.timeout(BUDGET_S + 30),
        serve(schema_flow(), UNLIMITED) as url,
        httpx.AsyncClient(base_url=url, timeout=10) as client,
    ):
        # A short stream, read to its end before the fuzzer starts others: the
        # demo node runs one invocation at a time.
        body = {"payload": "a short answer", "headers": {"tenant": "acme"}}
        r = await client.post("/v1/streams", json=body)
        assert r.status_code == 201, r.text
        sid = r.json()["stream_id"]
        async with client.stream("GET", f"/v1/streams/{sid}") as stream:
            assert stream.status_code == 200
            await stream.aread()
        failures = await asyncio.to_thread(fuzz, url, sid)
        assert (await client.get("/healthz")).status_code == 200  # still serving
    assert not failures, "\n\n".join(failures)
    assert time.monotonic() - started < BUDGET_S + 30


async def test_start_refuses_a_priority_its_schema_forbids(serve: Serve) -> None:
    async with (
        asyncio.timeout(30),
        serve(build_demo_flow(Pacing(0, 0)), UNLIMITED) as url,
        httpx.AsyncClient(base_url=url, timeout=10) as client,
    ):
        spec = (await client.get("/openapi.json")).json()
        bounds = spec["components"]["schemas"]["Headers"]["properties"]["priority"]
        for priority in (bounds["maximum"] + 1, bounds["minimum"] - 1, 2**62):
            body = {"payload": "x", "headers": {"tenant": "acme", "priority": priority}}
            r = await client.post("/v1/streams", json=body)
            assert r.status_code == 400, (priority, r.status_code, r.text)
            assert r.json()["error"]["code"] == "bad_request"
