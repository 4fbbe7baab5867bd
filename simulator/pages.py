"""The simulator's pages: the virtual handset and the overview (catalogue, customers, pushes).

The templates are in simulator/templates (package data), their scripts and styles in
simulator/static; the data comes from the control API.
"""

from __future__ import annotations

from typing import Any

import aiohttp_jinja2
from aiohttp import web

from .keys import SIMULATOR
from .phones import msisdn as safaricom_msisdn


@aiohttp_jinja2.template("simulator.html")
async def overview(request: web.Request) -> dict[str, Any]:
    sim = request.app[SIMULATOR]
    return {"business_name": sim.business_name, "catalogue": list(sim.catalogue.values()),
            "pin": sim.settings.pin, "settings": sim.settings}


async def phone_picker(request: web.Request) -> web.Response:
    """The number picker; `?phone=0712…` (the form without JavaScript) goes to that phone."""
    if request.query.get("phone"):
        raise web.HTTPFound(str(request.app.router["phone"].url_for(msisdn=request.query["phone"].strip()[:20])))
    sim = request.app[SIMULATOR]
    context = {"business_name": sim.business_name, "catalogue": list(sim.catalogue.values()), "error": None}
    return aiohttp_jinja2.render_template("phone_picker.html", request, context)


async def phone(request: web.Request) -> web.Response:
    sim = request.app[SIMULATOR]
    msisdn = safaricom_msisdn(request.match_info["msisdn"], typed=True)
    if msisdn is None:
        picker = {"business_name": sim.business_name, "catalogue": list(sim.catalogue.values()),
                  "error": f"{request.match_info['msisdn'][:20]!r} is not a phone number"}
        return aiohttp_jinja2.render_template("phone_picker.html", request, picker, status=404)
    if msisdn != request.match_info["msisdn"]:
        raise web.HTTPFound(str(request.app.router["phone"].url_for(msisdn=msisdn)))
    subscriber = sim.subscriber(msisdn)
    scenario = sim.catalogue.get(msisdn)
    context: dict[str, Any] = {"business_name": sim.business_name, "msisdn": msisdn, "subscriber": subscriber,
                               "scenario": scenario, "pin_length": len(sim.settings.pin)}
    return aiohttp_jinja2.render_template("phone.html", request, context)
