"""Application keys (typed aiohttp AppKeys), shared by the app factory and the views."""

from __future__ import annotations

from aiohttp import web

from store_server.config import ServerConfig
from store_server.metrics import Metrics
from store_server.services.store import StoreServices

CONFIG = web.AppKey("config", ServerConfig)
SERVICE = web.AppKey("service", StoreServices)
METRICS = web.AppKey("metrics", Metrics)
METRICS_PORT = web.AppKey("metrics_port", int)
"""The port the metrics listener is bound to (``metrics_listen`` may ask for port 0)."""
