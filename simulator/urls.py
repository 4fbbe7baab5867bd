"""Route tables: Daraja's paths, and the simulator's own control API."""

from __future__ import annotations

from aiohttp import web

from . import control, openapi, pages, responses

DARAJA_ROUTES = [
    web.get("/oauth/v1/generate", responses.oauth_generate, allow_head=False),
    web.post("/mpesa/stkpush/v1/processrequest", responses.stk_push),
    web.post("/mpesa/stkpushquery/v1/query", responses.stk_query),
]

CONTROL_ROUTES = [
    web.get("/api/scenarios", control.list_scenarios),
    web.get("/api/prompts", control.list_prompts),
    web.get("/api/prompts/{checkout_request_id}", control.get_prompt),
    web.post("/api/prompts/{checkout_request_id}/pin", control.enter_pin),
    web.post("/api/prompts/{checkout_request_id}/cancel", control.cancel),
    web.post("/api/prompts/{checkout_request_id}/ignore", control.ignore),
    web.post("/api/trigger", control.trigger),
    web.get("/api/journal", control.journal),
    web.post("/api/callbacks/{journal_id}/resend", control.resend_callback),
    web.get("/api/faults", control.list_faults),
    web.post("/api/faults", control.add_faults),
    web.delete("/api/faults", control.clear_faults),
    web.put("/api/subscribers/{msisdn}/faults", control.set_subscriber_faults),
    web.delete("/api/subscribers/{msisdn}/faults", control.clear_subscriber_faults),
    web.post("/api/reset", control.reset),
    web.get("/api/clock", control.clock),
    web.post("/api/clock", control.clock),
    web.post("/api/tokens/expire", control.expire_tokens),
    web.get("/api/subscribers", control.list_subscribers),
    web.get("/api/subscribers/{msisdn}", control.get_subscriber),
    web.get("/api/events", control.events),
    web.get("/openapi.json", openapi.openapi_json),
    web.get("", pages.overview, name="simulator_overview"),
    web.get("/", pages.overview),
    web.get("/phone", pages.phone_picker, name="phone_picker"),
    web.get("/phone/{msisdn}", pages.phone, name="phone"),
]
