"""Kong's HTTP Log plugin posting to the receiver, end to end: Bearer key, JSON body,
stored events read back from the event table, skipped logs read back as the operator
sees them."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from django.urls import reverse

from metering.models import Event, KongSkippedEntry

pytestmark = [pytest.mark.django_db, pytest.mark.urls("tests.metering.kong_urls")]

URL = "/api/v1/gateways/kong/http-log"
FIXTURES = Path(__file__).parent / "fixtures"


def kong_log(name: str):
    return json.loads((FIXTURES / f"{name}.json").read_text())


def post(client, body, *, query: str = "", content_type: str = "application/json"):
    return client.post(URL + query, data=json.dumps(body), content_type=content_type)


def stored() -> list[Event]:
    return list(Event.objects.order_by("time", "event_id"))


def skipped() -> dict[str, int]:
    """Skipped logs counted per reason (all days)."""
    counts: dict[str, int] = {}
    for row in KongSkippedEntry.objects.all():
        counts[row.reason] = counts.get(row.reason, 0) + row.count
    return counts


def skip_detail(reason: str) -> str:
    return KongSkippedEntry.objects.get(reason=reason).detail


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
        "route_name": "flights",
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


def llm_events() -> dict[str, Event]:
    """The stored llm events by direction."""
    return {e.data["direction"]: e for e in Event.objects.filter(type="llm")}


def test_an_ai_gateway_log_adds_an_llm_event_per_direction_with_its_tokens(kong):
    response = post(kong, kong_log("kong_ai_proxy"))

    assert response.status_code == 204, response.content
    [request] = Event.objects.filter(type="request")
    assert request.data["route"] == "openai-chat"
    assert request.data["status"] == "200"
    llm = llm_events()
    assert set(llm) == {"input", "output"}
    assert llm["input"].event_id == "5c10fade1c9e4d6c8275c52c36731d3c:llm:proxy:input"
    assert llm["output"].event_id == "5c10fade1c9e4d6c8275c52c36731d3c:llm:proxy:output"
    for event in llm.values():
        assert event.subject == "acme-app-1"
        assert event.time == request.time == datetime(2026, 11, 27, 10, 5, 12, 120000, tzinfo=UTC)
    call = {
        "model": "gpt-4o",
        "response_model": "gpt-4o-2024-08-06",
        "provider": "openai",
        "plugin": "proxy",
        "route": "openai-chat",
        "route_name": "openai-chat",
        "path": request.data["path"],
        "service": "openai",
        "status": "200",
    }
    assert llm["input"].data == {
        "tokens": 1234,
        "direction": "input",
        "prompt_tokens": 1234,
        # what describes the whole call rides on its first event only
        "total_tokens": 1611,
        "cost": "0.006855",
        "llm_latency_ms": 2670,
        **call,
    }
    assert llm["output"].data == {
        "tokens": 377,
        "direction": "output",
        "completion_tokens": 377,
        **call,
    }


def test_a_call_without_output_tokens_is_one_input_event(kong):
    """An embeddings call, say: no zero-token event, and the call's totals on the one."""
    log = kong_log("kong_ai_proxy")
    log["ai"]["proxy"]["usage"] = {"prompt_tokens": 42, "completion_tokens": 0, "cost": 0.1}

    assert post(kong, log).status_code == 204

    [event] = Event.objects.filter(type="llm")
    assert (event.data["tokens"], event.data["direction"]) == (42, "input")
    assert (event.data["total_tokens"], event.data["cost"]) == (42, "0.1")


def test_each_ai_section_of_a_log_has_its_own_events(kong):
    """An LLM-calling transformer plugin logs its own section beside ai-proxy's."""
    log = kong_log("kong_ai_proxy")
    log["ai"]["ai-request-transformer"] = copy.deepcopy(log["ai"]["proxy"])
    log["ai"]["ai-request-transformer"]["usage"]["prompt_tokens"] = 10

    assert post(kong, log).status_code == 204

    tokens = {
        (e.data["plugin"], e.data["direction"]): e.data["tokens"]
        for e in Event.objects.filter(type="llm")
    }
    assert tokens == {
        ("ai-request-transformer", "input"): 10,
        ("ai-request-transformer", "output"): 377,
        ("proxy", "input"): 1234,
        ("proxy", "output"): 377,
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

    llm = llm_events()
    assert llm["input"].event_id.endswith(":llm:ai-proxy:input")
    assert (llm["input"].data["model"], llm["input"].data["provider"]) == ("gpt-35-turbo", "azure")
    assert (llm["input"].data["tokens"], llm["output"].data["tokens"]) == (89, 56)
    assert llm["input"].data["total_tokens"] == 145


def test_an_ai_call_that_used_no_tokens_is_only_a_request(kong):
    log = kong_log("kong_ai_proxy")
    log["response"]["status"] = 429
    log["ai"]["proxy"]["usage"] = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}

    assert post(kong, log).status_code == 204

    assert [e.type for e in stored()] == ["request"]


def test_the_subject_comes_from_the_header_named_in_the_url_path(kong):
    """Kong's http-log drops the query string of its http_endpoint: the path carries it."""
    response = post(kong, kong_log("kong_no_consumer_header"), query="/subject-header/X-Client-Id")

    assert response.status_code == 204, response.content
    [event] = stored()
    assert event.subject == "globex-eu-gw"
    assert skipped() == {}


@pytest.mark.urls("config.urls")
def test_the_subject_header_path_is_mounted_in_the_api(kong):
    url = reverse("kong-http-log-subject-header", kwargs={"subject_header": "x-client-id"})
    assert url == URL + "/subject-header/x-client-id"

    response = kong.post(
        url, data=json.dumps(kong_log("kong_no_consumer_header")), content_type="application/json"
    )

    assert response.status_code == 204, response.content
    assert [e.subject for e in stored()] == ["globex-eu-gw"]


def test_the_subject_header_query_parameter_still_works_for_older_setups(kong):
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


def test_a_log_without_a_subject_is_skipped_and_the_rest_of_the_batch_stored(kong):
    batch = [kong_log("kong_api_call"), kong_log("kong_no_consumer_header")]

    response = post(kong, batch)

    assert response.status_code == 204, response.content
    assert [e.subject for e in stored()] == ["acme-app-1"]
    assert skipped() == {"no_subject": 1}
    assert skip_detail("no_subject").startswith("subject: the log has no consumer")


def test_a_batch_with_one_unattributable_and_one_unreadable_log_stores_the_third(kong):
    good = json.dumps(kong_log("kong_api_call")).encode()
    no_subject = json.dumps(kong_log("kong_no_consumer_header")).encode()
    not_utf8 = json.dumps(kong_log("kong_batch")[1]).encode().replace(b"globex", b"gl\xf6bex")
    body = b"[" + b",".join([good, no_subject, not_utf8]) + b"]"

    first = kong.post(URL, data=body, content_type="application/json")
    again = kong.post(URL, data=body, content_type="application/json")  # Kong's retry

    assert (first.status_code, again.status_code) == (204, 204)
    assert [e.event_id for e in stored()] == ["2f6946328ffc4946b8c9120704a4a155"]
    # each arrival is counted; the stored event counts once
    assert skipped() == {"no_subject": 2, "not_utf8": 2}
    assert KongSkippedEntry.objects.count() == 2  # one row per day and reason


def test_the_skip_names_the_missing_header(kong):
    response = post(kong, kong_log("kong_no_consumer_header"), query="/subject-header/x-tenant")

    assert response.status_code == 204
    assert stored() == []
    assert "no 'x-tenant' request header" in skip_detail("no_subject")


def test_a_subject_holding_a_nul_is_skipped_not_merged_with_another(kong):
    log = kong_log("kong_api_call")
    log["consumer"]["custom_id"] = "acme\x00app-1"

    assert post(kong, log).status_code == 204

    assert stored() == []
    assert skipped() == {"bad_subject": 1}
    assert "NUL" in skip_detail("bad_subject")


def test_a_resent_log_counts_once(kong):
    log = kong_log("kong_ai_proxy")

    assert post(kong, log).status_code == 204
    assert post(kong, [log, log]).status_code == 204

    assert sorted(e.type for e in stored()) == ["llm", "llm", "request"]


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
    assert "route_name" not in event.data
    assert event.data["request_bytes"] == 139


def test_the_route_name_and_the_request_path_are_both_recorded(kong):
    log = kong_log("kong_api_call")
    log["route"] = {"name": "flights-search", "paths": ["/v1/flights"]}
    log["request"]["uri"] = "/v1/flights/BA117?date=2026-11-27"

    assert post(kong, log).status_code == 204

    [event] = stored()
    assert event.data["route_name"] == "flights-search"
    assert event.data["route"] == "flights-search"
    assert event.data["path"] == "/v1/flights/BA117"


def test_every_bad_log_is_skipped_under_its_reason_and_the_good_one_stored(kong):
    no_request = {"started_at": 1795773600538, "consumer": {"username": "acme-app"}}
    seconds = kong_log("kong_api_call")
    seconds["started_at"] = 1795773600
    seconds["request"]["id"] = "seconds"
    bad_tokens = kong_log("kong_ai_proxy")
    bad_tokens["ai"]["proxy"]["usage"]["prompt_tokens"] = "lots"

    response = post(kong, [no_request, kong_log("kong_api_call"), seconds, "x", bad_tokens])

    assert response.status_code == 204, response.content
    assert [e.event_id for e in stored()] == ["2f6946328ffc4946b8c9120704a4a155"]
    assert skipped() == {"not_a_log": 2, "bad_time": 1, "bad_tokens": 1}
    assert skip_detail("not_a_log") == "must be a Kong log object"  # the latest of the two
    assert KongSkippedEntry.objects.get(reason="not_a_log").sample == '"x"'
    assert skip_detail("bad_time").startswith("started_at: before 2000")
    assert skip_detail("bad_tokens").startswith("ai.proxy.usage.prompt_tokens:")


def test_a_batch_of_nothing_but_bad_logs_is_accepted_and_counted(kong):
    assert post(kong, [kong_log("kong_no_consumer_header")] * 3).status_code == 204

    assert stored() == []
    assert skipped() == {"no_subject": 3}


def test_a_long_skipped_log_is_kept_as_a_sample_of_a_few_kilobytes(kong):
    log = kong_log("kong_no_consumer_header")
    log["request"]["headers"]["x-padding"] = "p" * 100_000

    assert post(kong, log).status_code == 204

    sample = KongSkippedEntry.objects.get().sample
    assert len(sample) == 4000
    assert sample.startswith("{") and sample.endswith("…")


@pytest.mark.urls("config.urls")
def test_the_admin_shows_skipped_logs_beside_unattributed_usage(kong, admin_client):
    no_subject = kong_log("kong_no_consumer_header")
    kong.post(URL, data=json.dumps([no_subject, no_subject]), content_type="application/json")
    kong.post(URL, data=b'["x"]', content_type="application/json")

    response = admin_client.get(reverse("admin:metering_unattributed_usage"))

    assert response.status_code == 200
    body = response.content.decode()
    table = body[body.index('id="kong-skips"') :]
    assert "No consumer and no subject header" in table
    assert '<td class="skipped" style="text-align:right">2</td>' in table
    assert "Not a Kong HTTP log" in table
    assert "subject: the log has no consumer" in table
    assert "globex-eu-gw" in table  # the sample: the log as it arrived


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

    assert response.status_code == 204
    assert stored() == []
    assert skipped() == {"bad_tokens": 1}
    assert skip_detail("bad_tokens").startswith("ai.proxy.usage.prompt_tokens:")


def test_numbers_a_meter_cannot_sum_are_left_out_or_rounded(kong):
    log = kong_log("kong_ai_proxy")
    log["latencies"]["request"] = 1e30
    log["latencies"]["kong"] = 0.1 + 0.2  # 0.30000000000000004
    log["ai"]["proxy"]["usage"]["cost"] = 1e-15

    response = post(kong, log)

    assert response.status_code == 204, response.content
    [request] = Event.objects.filter(type="request")
    assert "latency_ms" not in request.data
    assert request.data["kong_latency_ms"] == 0.3
    assert llm_events()["input"].data["cost"] == "0"


def test_a_log_from_centuries_ahead_is_skipped_and_opens_no_partition(kong):
    from metering.partitions import existing_partitions

    partitions = existing_partitions()
    log = kong_log("kong_api_call")
    log["started_at"] = int(datetime(2300, 1, 1, tzinfo=UTC).timestamp() * 1000)

    response = post(kong, [kong_log("kong_batch")[0], log])

    assert response.status_code == 204
    assert [e.subject for e in stored()] == ["acme-app-1"]
    assert skipped() == {"bad_time": 1}
    assert (
        skip_detail("bad_time") == "started_at: more than 24 hours after the request was received"
    )
    assert existing_partitions() - partitions <= {datetime(2026, 11, 1).date()}


def test_logs_of_more_old_months_than_a_request_may_open_keep_the_newest(kong):
    from metering.ingest_limits import MAX_NEW_PARTITIONS
    from metering.partitions import existing_partitions

    months = [datetime(2001 + m // 12, m % 12 + 1, 15, tzinfo=UTC) for m in range(14)]
    assert not {m.date().replace(day=1) for m in months} & existing_partitions()
    logs = []
    for number, month in enumerate(months):
        log = kong_log("kong_api_call")
        log["request"]["id"] = f"replay-{number}"
        log["started_at"] = int(month.timestamp() * 1000)
        logs.append(log)

    response = post(kong, logs)

    assert response.status_code == 204, response.content
    assert [e.event_id for e in stored()] == [f"replay-{n}" for n in range(2, 14)]
    assert len(stored()) == MAX_NEW_PARTITIONS
    assert skipped() == {"bad_time": 2}


def test_a_log_that_is_not_utf8_or_holds_an_unreadable_number_is_skipped(kong):
    good = json.dumps(kong_log("kong_api_call")).encode()
    latin1 = good.replace(b'"acme-app"', b'"acm\xe9"')
    too_big = good.replace(b'"receive": 0', b'"receive": 1e400')

    response = kong.post(
        URL, data=b"[" + b",".join([good, latin1, too_big]) + b"]", content_type="application/json"
    )

    assert response.status_code == 204
    assert len(stored()) == 1
    assert skipped() == {"not_utf8": 1, "bad_number": 1}
    assert skip_detail("not_utf8") == "the log is not valid UTF-8"
    assert skip_detail("bad_number") == "the log cannot be read: Number out of range"
    sample = KongSkippedEntry.objects.get(reason="not_utf8").sample
    assert '"acm\\xe9"' in sample  # the byte shown, not lost


def test_a_body_nested_too_deeply_to_read_is_a_bad_request(kong):
    response = kong.post(URL, data=b"[" * 100_000, content_type="application/json")

    assert response.status_code == 400
    assert "nested too deeply" in response.json()["detail"]


def test_a_body_that_is_not_utf8_json_is_a_bad_request(kong):
    body = json.dumps(kong_log("kong_api_call")).encode("utf-16")

    response = kong.post(URL, data=body, content_type="application/json")

    assert response.status_code == 400
    assert response.json()["detail"].startswith("The body is not UTF-8 JSON")
