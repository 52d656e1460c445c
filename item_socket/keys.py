"""Typed keys of the objects an item_socket aiohttp application holds."""

from __future__ import annotations

import asyncio

import socketio
from aiohttp import web

from .auth import Authorizer
from .connection import Services
from .connections import Connections
from .metrics import Metrics
from .rooms import RoomRegistry
from .settings import Settings
from .store import DocumentStore
from .streams import DocumentStreams

SETTINGS = web.AppKey("settings", Settings)
METRICS = web.AppKey("metrics", Metrics)
AUTHORIZER = web.AppKey("authorizer", Authorizer)
CONNECTIONS = web.AppKey("connections", Connections)
STORE = web.AppKey("store", DocumentStore)
# None without the scale-out (no --redis-url).
STREAMS: web.AppKey[DocumentStreams | None] = web.AppKey("streams")
REGISTRY = web.AppKey("registry", RoomRegistry)
SOCKETIO = web.AppKey("socketio", socketio.AsyncServer)
DRAINED = web.AppKey("drained", asyncio.Event)
SERVICES = web.AppKey("services", Services)
