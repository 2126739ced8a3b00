"""Kong's HTTP Log plugin posting to the receiver, end to end: Bearer key, JSON body,
stored events read back from the event table."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from metering.models import Event

pytestmark = [pytest.mark.django_db, pytest.mark.urls("tests.metering.kong_urls")]

URL = "/api/v1/gateways/kong/http-log"
FIXTURES = Path(__file__).parent / "fixtures"


def kong_log(name: str):
    return json.loads((FIXTURES / f"{name}.json").read_text())


def post(client, body, *, query: str = "", content_type: str = "application/json"):
    return client.post(URL + query, data=json.dumps(body), content_type=content_type)


def stored() -> list[Event]:
    return list(Event.objects.order_by("time", "event_id"))


@pytest.fixture
def kong(api_client_for):
    """Kong's http-log plugin, configured with an ingest-only key."""
    return api_client_for("ingest")


def test_a_consumers_api_call_becomes_a_request_event(kong):
    response = post(kong, kong_log("kong_api_call"))

    assert response.status_code == 204, response.content
    [event] = stored()
    assert event.source == "kong"
    assert event.event_id == "2f6946328ffc4946b8c9120704a4a155"
    assert event.type == "request"
    assert event.subject == "acme-app-1"
    assert event.time == datetime(2026, 11, 27, 10, 0, 0, 538000, tzinfo=UTC)
    assert event.data == {
        "route": "flights",
        "service": "flights-api",
        "method": "GET",
        "status": "200",
        "path": "/flights",
        "latency_ms": 173,
        "kong_latency_ms": 1,
        "upstream_latency_ms": 171,
        "request_bytes": 139,
        "response_bytes": 9982,
        "workspace": "default",
    }


def test_a_batch_of_three_logs_is_stored_whole(kong):
    response = post(kong, kong_log("kong_batch"))

    assert response.status_code == 204, response.content
    events = stored()
    assert [(e.subject, e.data["method"], e.data["status"]) for e in events] == [
        ("acme-app-1", "GET", "200"),
        # globex-hq has no custom_id: its username is the subject
        ("globex-hq", "POST", "201"),
        ("globex-hq", "GET", "404"),
    ]
    assert {e.type for e in events} == {"request"}
    assert [e.data["path"] for e in events] == [
        "/flights/BA117",
        "/flights/BA117/bookings",
        "/flights/XX000",
    ]


def test_an_ai_gateway_log_adds_an_llm_event_with_its_tokens(kong):
    response = post(kong, kong_log("kong_ai_proxy"))

    assert response.status_code == 204, response.content
    request, llm = sorted(stored(), key=lambda e: e.type, reverse=True)
    assert request.type == "request"
    assert request.data["route"] == "openai-chat"
    assert request.data["status"] == "200"
    assert llm.type == "llm"
    assert llm.event_id == "5c10fade1c9e4d6c8275c52c36731d3c:llm:proxy"
    assert llm.subject == "acme-app-1"
    assert llm.time == request.time == datetime(2026, 11, 27, 10, 5, 12, 120000, tzinfo=UTC)
    assert llm.data == {
        "model": "gpt-4o",
        "response_model": "gpt-4o-2024-08-06",
        "provider": "openai",
        "prompt_tokens": 1234,
        "completion_tokens": 377,
        "total_tokens": 1611,
        "cost": "0.006855",
        "llm_latency_ms": 2670,
        "plugin": "proxy",
        "route": "openai-chat",
        "service": "openai",
        "status": "200",
    }


def test_kong_3_7_ai_proxy_section_with_the_documented_singular_token_names_is_read(kong):
    log = kong_log("kong_ai_proxy")
    log["ai"] = {
        "payload": {"request": "{}"},
        "ai-proxy": {
            "meta": {
                "plugin_id": "5df193be-47a3-4f1b-8c37-37e31af0568b",
                "provider_name": "azure",
                "request_model": "gpt-35-turbo",
                "response_model": "gpt-35-turbo",
            },
            "usage": {"prompt_token": 89, "completion_token": 56, "total_tokens": 145},
        },
    }

    assert post(kong, log).status_code == 204

    [llm] = Event.objects.filter(type="llm")
    assert llm.event_id.endswith(":llm:ai-proxy")
    assert (llm.data["model"], llm.data["provider"]) == ("gpt-35-turbo", "azure")
    assert (llm.data["prompt_tokens"], llm.data["completion_tokens"]) == (89, 56)
    assert llm.data["total_tokens"] == 145


def test_an_ai_call_that_used_no_tokens_is_only_a_request(kong):
    log = kong_log("kong_ai_proxy")
    log["response"]["status"] = 429
    log["ai"]["proxy"]["usage"] = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}

    assert post(kong, log).status_code == 204

    assert [e.type for e in stored()] == ["request"]


def test_the_subject_comes_from_the_header_named_on_the_url(kong):
    response = post(kong, kong_log("kong_no_consumer_header"), query="?subjectHeader=X-Client-Id")

    assert response.status_code == 204, response.content
    [event] = stored()
    assert event.subject == "globex-eu-gw"


def test_the_subject_header_can_be_a_setting(kong, settings):
    settings.METERING_KONG_SUBJECT_HEADER = "x-client-id"

    assert post(kong, kong_log("kong_no_consumer_header")).status_code == 204

    assert [e.subject for e in stored()] == ["globex-eu-gw"]


def test_a_configured_header_wins_over_the_consumer_and_falls_back_to_it(kong):
    with_header = kong_log("kong_api_call")
    without_header = kong_log("kong_batch")[0]
    del without_header["request"]["headers"]["x-consumer-id"]

    response = post(kong, [with_header, without_header], query="?subjectHeader=x-consumer-id")

    assert response.status_code == 204, response.content
    assert [e.subject for e in stored()] == ["8c1f0f5e-5c2c-4a4e-9d76-3d3b1a0c2f11", "acme-app-1"]


def test_a_log_without_a_subject_rejects_the_whole_batch(kong):
    batch = [kong_log("kong_api_call"), kong_log("kong_no_consumer_header")]

    response = post(kong, batch)

    assert response.status_code == 400
    assert response["Content-Type"] == "application/problem+json"
    problem = response.json()
    assert problem["detail"] == "1 log(s) cannot be metered; nothing was stored."
    [error] = problem["errors"]
    assert error["index"] == 1
    assert error["reason"].startswith("subject: the log has no consumer")
    assert stored() == []


def test_the_rejection_names_the_missing_header(kong):
    response = post(kong, kong_log("kong_no_consumer_header"), query="?subjectHeader=x-tenant")

    assert response.status_code == 400
    assert "no 'x-tenant' request header" in response.json()["errors"][0]["reason"]


def test_a_resent_log_counts_once(kong):
    log = kong_log("kong_ai_proxy")

    assert post(kong, log).status_code == 204
    assert post(kong, [log, log]).status_code == 204

    assert sorted(e.type for e in stored()) == ["llm", "request"]


def test_without_a_kong_request_id_a_resent_log_still_counts_once(kong):
    """Kong before 3.5 logs no request id; a client's own Kong-Request-ID must not make
    two requests one."""
    first = kong_log("kong_api_call")
    del first["request"]["id"]
    del first["response"]["headers"]["x-kong-request-id"]
    first["request"]["headers"]["kong-request-id"] = "client-chosen"
    second = copy.deepcopy(first)
    second["started_at"] += 1500
    second["latencies"]["request"] = 181

    assert post(kong, [first, second, first]).status_code == 204
    assert post(kong, second).status_code == 204

    events = stored()
    assert len(events) == 2
    assert all(e.event_id.startswith("sha256:") for e in events)


def test_events_take_the_configured_source(kong, settings):
    settings.METERING_KONG_SOURCE = "kong-eu"

    assert post(kong, kong_log("kong_api_call")).status_code == 204

    assert [e.source for e in stored()] == ["kong-eu"]


def test_an_unmatched_request_is_metered_without_route_or_service(kong):
    log = kong_log("kong_api_call")
    for key in ("route", "service"):
        del log[key]
    log["response"]["status"] = 404
    log["latencies"]["proxy"] = -1

    assert post(kong, log).status_code == 204

    [event] = stored()
    assert event.data["status"] == "404"
    assert "route" not in event.data
    assert "service" not in event.data
    assert "upstream_latency_ms" not in event.data


def test_a_route_without_a_name_is_known_by_its_first_path(kong):
    log = kong_log("kong_api_call")
    del log["route"]["name"]
    log["request"]["size"] = "139"  # older Kong releases logged sizes as strings

    assert post(kong, log).status_code == 204

    [event] = stored()
    assert event.data["route"] == "/flights"
    assert event.data["request_bytes"] == 139


def test_every_bad_log_is_named(kong):
    no_request = {"started_at": 1795773600538, "consumer": {"username": "acme-app"}}
    seconds = kong_log("kong_api_call")
    seconds["started_at"] = 1795773600
    bad_tokens = kong_log("kong_ai_proxy")
    bad_tokens["ai"]["proxy"]["usage"]["prompt_tokens"] = "lots"

    response = post(kong, [no_request, kong_log("kong_api_call"), seconds, "x", bad_tokens])

    assert response.status_code == 400
    reasons = {e["index"]: e["reason"] for e in response.json()["errors"]}
    assert sorted(reasons) == [0, 2, 3, 4]
    assert reasons[0].startswith("request: required")
    assert reasons[2].startswith("started_at:")
    assert reasons[3] == "must be a Kong log object"
    assert reasons[4].startswith("ai.proxy.usage.prompt_tokens:")
    assert stored() == []


def test_malformed_json_is_a_bad_request(kong):
    response = kong.post(URL, data=b'{"request": ', content_type="application/json")

    assert response.status_code == 400
    assert response.json()["detail"].startswith("Malformed JSON")


def test_a_json_scalar_is_a_bad_request(kong):
    assert post(kong, "hello").status_code == 400


def test_a_non_json_body_is_unsupported(kong):
    response = kong.post(URL, data="request=1", content_type="application/x-www-form-urlencoded")

    assert response.status_code == 415


def test_an_invalid_subject_header_name_is_a_bad_request(kong):
    response = post(kong, kong_log("kong_api_call"), query="?subjectHeader=x%20client")

    assert response.status_code == 400
    assert stored() == []


def test_a_batch_over_the_limit_is_too_large(kong, settings):
    settings.METERING_MAX_BATCH_EVENTS = 2

    assert post(kong, kong_log("kong_batch")).status_code == 413


def test_without_an_api_key_kong_is_asked_for_a_bearer_token(kong):
    kong.credentials()

    response = post(kong, kong_log("kong_api_call"))

    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert stored() == []


def test_a_wrong_api_key_is_refused(kong):
    kong.credentials(HTTP_AUTHORIZATION="Bearer not-a-key")

    assert post(kong, kong_log("kong_api_call")).status_code == 401


def test_a_key_without_the_ingest_scope_is_forbidden(api_client_for):
    reader = api_client_for("read", "write")

    response = post(reader, kong_log("kong_api_call"))

    assert response.status_code == 403
    assert "ingest" in response.json()["detail"]
    assert stored() == []


# -- hostile logs: never a 500, never a value a meter cannot sum ----------------------


def test_sizes_and_statuses_in_digits_that_are_not_ascii_are_left_out(kong):
    log = kong_log("kong_api_call")
    log["request"]["size"] = "²"  # str.isdigit() says yes; int() says no
    log["response"]["size"] = "١٢"  # Arabic-Indic digits
    log["response"]["status"] = "9" * 5000  # int() refuses past 4,300 digits

    response = post(kong, log)

    assert response.status_code == 204, response.content
    [event] = stored()
    assert {"request_bytes", "response_bytes", "status"}.isdisjoint(event.data)


def test_token_counts_in_digits_that_are_not_ascii_make_the_log_unreadable(kong):
    log = kong_log("kong_ai_proxy")
    log["ai"]["proxy"]["usage"]["prompt_tokens"] = "²"

    response = post(kong, log)

    assert response.status_code == 400
    [error] = response.json()["errors"]
    assert error["reason"].startswith("ai.proxy.usage.prompt_tokens:")
    assert stored() == []


def test_numbers_a_meter_cannot_sum_are_left_out_or_rounded(kong):
    log = kong_log("kong_ai_proxy")
    log["latencies"]["request"] = 1e30
    log["latencies"]["kong"] = 0.1 + 0.2  # 0.30000000000000004
    log["ai"]["proxy"]["usage"]["cost"] = 1e-15

    response = post(kong, log)

    assert response.status_code == 204, response.content
    request, llm = sorted(stored(), key=lambda e: e.type, reverse=True)
    assert "latency_ms" not in request.data
    assert request.data["kong_latency_ms"] == 0.3
    assert llm.data["cost"] == "0"


def test_a_log_from_centuries_ahead_is_refused_and_opens_no_partition(kong):
    from metering.partitions import existing_partitions

    partitions = existing_partitions()
    log = kong_log("kong_api_call")
    log["started_at"] = int(datetime(2300, 1, 1, tzinfo=UTC).timestamp() * 1000)

    response = post(kong, [kong_log("kong_batch")[0], log])

    assert response.status_code == 400
    [error] = response.json()["errors"]
    assert error == {
        "index": 1,
        "reason": "started_at: more than 24 hours after the request was received",
    }
    assert stored() == []
    assert existing_partitions() == partitions


def test_a_log_that_is_not_utf8_or_holds_an_unreadable_number_is_named(kong):
    good = json.dumps(kong_log("kong_api_call")).encode()
    latin1 = good.replace(b'"acme-app"', b'"acm\xe9"')
    too_big = good.replace(b'"receive": 0', b'"receive": 1e400')

    response = kong.post(
        URL, data=b"[" + b",".join([good, latin1, too_big]) + b"]", content_type="application/json"
    )

    assert response.status_code == 400
    reasons = {e["index"]: e["reason"] for e in response.json()["errors"]}
    assert reasons == {
        1: "the log is not valid UTF-8",
        2: "the log cannot be read: Number out of range",
    }
    assert stored() == []


def test_a_body_nested_too_deeply_to_read_is_a_bad_request(kong):
    response = kong.post(URL, data=b"[" * 100_000, content_type="application/json")

    assert response.status_code == 400
    assert "nested too deeply" in response.json()["detail"]


def test_a_body_that_is_not_utf8_json_is_a_bad_request(kong):
    body = json.dumps(kong_log("kong_api_call")).encode("utf-16")

    response = kong.post(URL, data=body, content_type="application/json")

    assert response.status_code == 400
    assert response.json()["detail"].startswith("The body is not UTF-8 JSON")
