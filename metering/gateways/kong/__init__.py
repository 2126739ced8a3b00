"""Kong Gateway logs as usage events: the payload of Kong's HTTP Log plugin.

Kong's logging plugins (http-log, and file-log, tcp-log, ... which share the serializer
``kong.log.serialize()``) send one JSON object per proxied request; http-log sends a
JSON array when its queue batches (``queue.max_batch_size`` > 1). The shape, as read
from Kong's source and docs:

- ``kong/pdk/log.lua`` (``serialize``, Kong 3.x): ``request {id, uri, url, querystring,
  method, headers, size, tls}``, ``response {status, headers, size}``, ``upstream_uri``,
  ``upstream_status``, ``latencies {kong, proxy, request, receive}`` (ms; ``proxy`` is -1
  when no upstream answered), ``tries``, ``authenticated_entity {id, consumer_id}``,
  ``route``, ``service``, ``consumer {id, username, custom_id, ...}``, ``client_ip``,
  ``started_at`` (ms since the epoch), ``source``, ``workspace``, ``workspace_name``.
  ``request.id`` exists since Kong 3.5 (the ``X-Kong-Request-Id``); before, there is no id.
  Sizes were numeric strings in old releases; header names are lower case, and a
  repeated header is a list.
- Kong AI Gateway (``ai-proxy``, ``ai-proxy-advanced`` with ``logging.log_statistics``):
  ``ai.proxy.{meta, usage}`` since 3.8 (``kong/llm/plugin/shared-filters/
  serialize-analytics.lua``); ``ai["ai-proxy"].{meta, usage}`` in 3.6 and 3.7, and
  ``ai["<plugin name>"]`` for the LLM-calling transformer plugins
  (``kong/llm/drivers/shared.lua``). ``usage {prompt_tokens, completion_tokens,
  total_tokens, cost, time_per_token}`` (the 3.7-3.9 docs spell ``prompt_token`` and
  ``completion_token``; both spellings are read), ``meta {plugin_id, provider_name,
  request_model, response_model, llm_latency}``.

Each log becomes one ``request`` event and, for each AI section that counted tokens, an
``llm`` event per direction, input (prompt) and output (completion), in OpenMeter's and
Kong's own Metering & Billing plugin's shape: ``tokens`` and what they were (see
``log.kong_log_events``). A log that cannot become events (no subject,
unreadable) is skipped with a reason, never a reason to refuse the others: Kong's queue
retries a refused batch and then drops it, good logs and all. The modules of this
package are pure: no ORM, no clock.

- ``batch``: a request body's logs, converted or skipped one by one (with a sample).
- ``log``: one log into its ``request`` event (time, id) and the events of its AI sections.
- ``ai``: the AI sections' token counts into ``llm`` events' data.
- ``subject``: who a log's usage belongs to (a request header, or the Kong consumer).
- ``values``: reading Kong's loosely typed values (text, headers, counts, numbers).
"""
