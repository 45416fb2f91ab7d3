"""The ASGI guard in front of every request: request ids, body caps, admission, metrics, access log.

A pure ASGI middleware (not Starlette's ``BaseHTTPMiddleware``), so it sees the body as it
streams: the cap is raised from ``receive`` inside the endpoint, and the one error table turns
it into a 413 like every other domain error.
"""

from __future__ import annotations

import logging
import re
import time
import uuid

from brandguard.serve.errors import PayloadTooLargeError, QueueFullError, send_error
from brandguard.serve.logs import ACCESS_LOGGER
from brandguard.serve.metrics import Metrics
from brandguard.serve.settings import Settings

JSON_BODY_LIMIT = 64 * 1024
REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._\-]{1,64}$")
DOOR_PATHS = frozenset({"/v1/check", "/v1/check/batch", "/v1/complaints"})
access_log = logging.getLogger(ACCESS_LOGGER)


class Guard:
    """Admission at the door, body caps while they stream, metrics, access log.

    Admission: image-judging requests (checks, complaints) pass a door before authentication
    or reading the body; at most ``Settings.inflight_limit`` are inside at once and the rest
    get 503 + Retry-After straight away.
    """

    def __init__(self, app, settings: Settings, metrics: Metrics) -> None:
        self.app = app
        self.settings = settings
        self.metrics = metrics

    def _limit(self, path: str) -> int:
        if path.startswith("/v1/check/batch"):
            return self.settings.body_limit(self.settings.max_files)
        if path.startswith("/v1/check") or path in ("/v1/complaints", "/v1/references"):
            return self.settings.body_limit(1)
        return JSON_BODY_LIMIT

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self._limit(scope.get("path", ""))
        headers = scope.get("headers", ())
        declared = next((v for k, v in headers if k == b"content-length"), None)
        given = next((v.decode("latin-1") for k, v in headers if k == b"x-request-id"), "")
        # A caller's request id is kept when it is safe to echo and log; otherwise we make one.
        request_id = given if REQUEST_ID_RE.match(given) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        seen = 0
        status = 500
        t0 = time.perf_counter()
        app_state = getattr(scope.get("app"), "state", None)
        service = getattr(app_state, "service", None)
        inference = service.inference if service is not None else None
        gated = inference is not None and scope.get("method") == "POST" and scope.get("path") in DOOR_PATHS
        inside = False

        def leave() -> None:
            nonlocal inside
            if inside and inference is not None:
                inference.at_door -= 1
                inside = False

        async def guarded_receive():
            nonlocal seen
            if declared is not None and declared.isdigit() and int(declared) > limit:
                raise PayloadTooLargeError(f"request body of {int(declared)} bytes is over {limit}")
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise PayloadTooLargeError(f"request body is over {limit} bytes")
            return message

        async def counting_send(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                # The work is done once the answer starts: leave the door now, so a client that sends
                # its next request as soon as it reads this one is not counted twice.
                leave()
                message = {**message, "headers": [*message.get("headers", ()),
                                                  (b"x-request-id", request_id.encode("latin-1"))]}
            await send(message)

        try:
            if gated and inference.at_door >= self.settings.inflight_limit:
                # Refused before auth and before the body is read: the cheapest possible answer.
                inference.admission_rejected += 1
                await send_error(counting_send, QueueFullError(1, 0, self.settings.retry_after_s), self.settings)
                return
            if gated:
                inference.at_door += 1
                inside = True
            try:
                await self.app(scope, guarded_receive, counting_send)
            finally:
                leave()
        finally:
            seconds = time.perf_counter() - t0
            route = scope.get("route")
            name = getattr(route, "path", None) or "unmatched"
            self.metrics.observe_request(scope.get("method", ""), name, status, seconds)
            if access_log.isEnabledFor(logging.INFO):
                principal = scope.get("state", {}).get("principal")
                client = scope.get("client") or ("", 0)
                access_log.info("request", extra={
                    "request_id": request_id, "method": scope.get("method", ""), "path": scope.get("path", ""),
                    "route": name, "status": status, "latency_ms": round(seconds * 1000, 3), "bytes_in": seen,
                    "client": client[0], "key_id": getattr(principal, "key_id", None)})
