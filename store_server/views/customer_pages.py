"""The customer app's reference web client: mobile pages served under /app/.

The pages are static shells: everything personal is fetched in the browser from the public
customer API (`/api/v1/...`) with the app token, exactly as a native app would. The server
renders only the UI strings (French or English) and the store's time zone (for "not today").
"""

from __future__ import annotations

from typing import Any

import aiohttp_jinja2
from aiohttp import web

from store_server.i18n import STRINGS, pick_language
from store_server.i18n_names import NAMES, RECORDS
from store_server.keys import CONFIG, SERVICE

routes = web.RouteTableDef()

# Page name -> template; also the order of the app's navigation bar.
PAGES: dict[str, str] = {
    "home": "app/home.html",
    "consents": "app/consents.html",
    "preferences": "app/preferences.html",
    "wishlist": "app/wishlist.html",
    "my-data": "app/my_data.html",
}
# The cookie remembering the chosen language lives a year: a preference, not personal data.
LANG_COOKIE_MAX_AGE_S = 365 * 24 * 3600


def _app_strings(request: web.Request, lang: str) -> dict[str, object]:
    """The strings the page scripts need: the customer app's keys, the names of the codes the
    API returns ("My data") and the zone names of this store."""
    strings: dict[str, object] = {k: v for k, v in STRINGS[lang].items() if k.startswith("app_")}
    zones = request.app[SERVICE].floor.zones
    strings["names"] = NAMES[lang]
    strings["records"] = RECORDS[lang]
    strings["zones"] = {z.id: z.name_en if lang == "en" else z.name_fr for z in zones}
    # A chain's store: a consent may be given for this shop or for every shop of the chain.
    strings["chain"] = request.app[CONFIG].chain_mode
    return strings


def render_page(request: web.Request, page: str) -> web.Response:
    lang = pick_language(
        request.query.get("lang"),
        request.cookies.get("bulle_lang"),
        request.headers.get("Accept-Language"),
    )
    context: dict[str, Any] = {
        "t": STRINGS[lang],
        "lang": lang,
        "page": page,
        "pages": list(PAGES),
        "app_strings": _app_strings(request, lang),
        "timezone": request.app[SERVICE].timezone_name or "",
    }
    response = aiohttp_jinja2.render_template(PAGES[page], request, context)
    if request.query.get("lang") in STRINGS:
        response.set_cookie(
            "bulle_lang",
            lang,
            samesite="Lax",
            httponly=True,
            secure=request.app[CONFIG].cookie_secure,
            path="/",
            max_age=LANG_COOKIE_MAX_AGE_S,
        )
    return response


@routes.get("/app")
async def app_root(request: web.Request) -> web.Response:
    raise web.HTTPFound("/app/")


@routes.get("/app/")
async def home(request: web.Request) -> web.Response:
    return render_page(request, "home")


@routes.get("/app/{page}")
async def page(request: web.Request) -> web.Response:
    name = request.match_info["page"]
    if name not in PAGES or name == "home":
        raise web.HTTPNotFound()
    return render_page(request, name)


def setup(app: web.Application) -> None:
    app.add_routes(routes)
