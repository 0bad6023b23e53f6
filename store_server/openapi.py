"""OpenAPI 3.1 document of the customer API (pure), built from the route registry.

Each customer API handler is registered through `Registry.operation`, which adds the aiohttp
route and records the operation here, so the document and the routes cannot drift apart
(tests/server/test_openapi.py checks both directions). Request schemas come from the msgspec
structs in `api_models` through `msgspec.json.schema_components`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import msgspec
from aiohttp import web

from store_server.api_models import ErrorEnvelope

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

OPENAPI_VERSION = "3.1.0"
# Where msgspec's component references point in an OpenAPI document.
REF_TEMPLATE = "#/components/schemas/{name}"
BEARER_SCHEME = "appToken"
_ERROR_DESCRIPTIONS = {
    400: "Bad request",
    401: "Missing or unknown app token",
    403: "Forbidden",
    404: "Not found",
    413: "Body too large",
    422: "Validation failed; `error.field` names the field",
    429: "Rate limited",
    500: "Internal error",
}


@dataclass(frozen=True, slots=True)
class Operation:
    method: str
    path: str
    summary: str
    status: int = 200
    request: type[msgspec.Struct] | None = None
    response: type[msgspec.Struct] | None = None
    auth: bool = True
    errors: tuple[int, ...] = ()
    # The body may be omitted (all its fields have defaults).
    request_optional: bool = False
    # The success body is a JSON file to save (Content-Disposition: attachment).
    download: bool = False


@dataclass(slots=True)
class Registry:
    """The customer API's routes, with what the OpenAPI document needs about each."""

    routes: web.RouteTableDef = field(default_factory=web.RouteTableDef)
    operations: list[Operation] = field(default_factory=list)

    def operation(
        self, method: str, path: str, summary: str, **details: Any
    ) -> Callable[[Handler], Handler]:
        op = Operation(method.upper(), path, summary, **details)

        def register(handler: Handler) -> Handler:
            self.operations.append(op)
            self.routes.route(op.method, op.path)(handler)
            return handler

        return register


def build_document(operations: Iterable[Operation], *, title: str, version: str) -> dict[str, Any]:
    ops = list(operations)
    structs: set[type[msgspec.Struct]] = {ErrorEnvelope}
    for op in ops:
        structs.update(t for t in (op.request, op.response) if t is not None)
    ordered = sorted(structs, key=lambda t: t.__name__)
    _, components = msgspec.json.schema_components(ordered, ref_template=REF_TEMPLATE)
    paths: dict[str, dict[str, Any]] = {}
    for op in ops:
        paths.setdefault(op.path, {})[op.method.lower()] = _operation(op)
    return {
        "openapi": OPENAPI_VERSION,
        "info": {"title": title, "version": version},
        "paths": dict(sorted(paths.items())),
        "components": {
            "schemas": components,
            "securitySchemes": {
                BEARER_SCHEME: {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "The app token returned by POST /api/v1/enroll",
                }
            },
        },
    }


def _ref(kind: type[msgspec.Struct]) -> dict[str, str]:
    return {"$ref": REF_TEMPLATE.format(name=kind.__name__)}


def _operation(op: Operation) -> dict[str, Any]:
    success: dict[str, Any] = {"description": op.summary}
    if op.status != 204:
        schema = _ref(op.response) if op.response is not None else {"type": "object"}
        success["content"] = {"application/json": {"schema": schema}}
        if op.download:
            success["headers"] = {
                "Content-Disposition": {
                    "description": "attachment; the body is a JSON file",
                    "schema": {"type": "string"},
                }
            }
    # Every route can answer 413 (a declared body over the limit is refused before the
    # handler) and 500; the others depend on the operation.
    errors = set(op.errors) | {413, 500}
    if op.auth:
        errors.add(401)
    if op.request is not None:
        errors |= {400, 413, 422}
    responses: dict[str, Any] = {str(op.status): success}
    for status in sorted(errors):
        responses[str(status)] = {
            "description": _ERROR_DESCRIPTIONS.get(status, "Error"),
            "content": {"application/json": {"schema": _ref(ErrorEnvelope)}},
        }
    out: dict[str, Any] = {
        "summary": op.summary,
        "operationId": op.method.lower() + op.path.replace("/", "_").replace("-", "_"),
        "responses": responses,
    }
    if op.request is not None:
        out["requestBody"] = {
            "required": not op.request_optional,
            "content": {"application/json": {"schema": _ref(op.request)}},
        }
    out["security"] = [{BEARER_SCHEME: []}] if op.auth else []
    return out
