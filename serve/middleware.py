"""The ASGI guard in front of every request: request ids, body caps and timeouts, metrics, access log.

A pure ASGI middleware (not Starlette's ``BaseHTTPMiddleware``), so it sees the body as it
streams. Every body is read through :class:`TimedBody`: over its size cap → 413, not complete
within ``body_timeout_s`` or slower than ``body_min_rate`` after ``body_rate_grace_s`` → 408.

- Uploads (checks, complaints, reference adds) are read by the endpoint itself, after the
  caller has authenticated; the caps are raised from ``receive`` inside the endpoint and the
  one error table turns them into 413/408 like every other domain error.
- Other bodies (JSON, at most ``max_json_bytes``) are read whole here, before the app runs,
  so their 413/408 is this module's answer (FastAPI would report a failed read as a 400).

Work held for a request (its API key's slot) is given back as soon as its answer starts, so a
client that sends its next request as soon as it reads this one is not counted twice.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from typing import Any, Callable

import anyio

from brandguard.serve.errors import BodyTimeoutError, PayloadTooLargeError, send_error
from brandguard.serve.logs import ACCESS_LOGGER
from brandguard.serve.metrics import Metrics
from brandguard.serve.settings import Settings

REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._\-]{1,64}$")
CLIENT_GONE = 499  # logged status of a request whose client left before any answer
access_log = logging.getLogger(ACCESS_LOGGER)


def on_answer(scope: dict[str, Any], release: Callable[[], None]) -> None:
    """Run ``release`` when the answer to this request starts (or the request ends without one)."""
    scope.setdefault("state", {}).setdefault("on_answer", []).append(release)


def _answered(scope: dict[str, Any]) -> None:
    releases = scope.get("state", {}).pop("on_answer", [])
    for release in releases:
        release()


class TimedBody:
    """``receive`` with the body's caps: size (413), total time and minimum rate (408).

    The clock starts at the first read, so time spent authenticating does not count.
    """

    def __init__(self, receive, limit: int, declared: int | None, settings: Settings) -> None:
        self.receive = receive
        self.limit = limit
        self.declared = declared
        self.settings = settings
        self.seen = 0
        self.started: float | None = None
        self.complete = False

    def _deadline(self) -> tuple[float, str]:
        assert self.started is not None
        s = self.settings
        total = self.started + s.body_timeout_s
        if s.body_min_rate > 0:
            paced = self.started + s.body_rate_grace_s + self.seen / s.body_min_rate
            if paced < total:
                return paced, "rate"
        return total, "total"

    def _too_slow(self, why: str) -> BodyTimeoutError:
        assert self.started is not None
        elapsed = time.monotonic() - self.started
        of = f"{self.seen} of {self.declared}" if self.declared is not None else f"{self.seen}"
        if why == "rate":
            return BodyTimeoutError(f"request body arriving at {self.seen / max(elapsed, 1e-3):.0f} bytes/s "
                                    f"({of} bytes in {elapsed:.1f} s), below the minimum of "
                                    f"{self.settings.body_min_rate} bytes/s")
        return BodyTimeoutError(f"request body not complete within {self.settings.body_timeout_s:g} s "
                                f"({of} bytes arrived)")

    async def __call__(self) -> dict[str, Any]:
        if self.declared is not None and self.declared > self.limit:
            raise PayloadTooLargeError(f"request body of {self.declared} bytes is over the limit of {self.limit} "
                                       "bytes for this endpoint")
        if self.complete:  # after the body: waiting for a disconnect has no deadline
            return await self.receive()
        if self.started is None:
            self.started = time.monotonic()
        deadline, why = self._deadline()
        try:
            with anyio.fail_after(max(0.0, deadline - time.monotonic())):
                message = await self.receive()
        except TimeoutError:
            raise self._too_slow(why) from None
        if message["type"] == "http.request":
            self.seen += len(message.get("body", b""))
            if self.seen > self.limit:
                raise PayloadTooLargeError(f"request body is over the limit of {self.limit} bytes for this endpoint")
            self.complete = not message.get("more_body", False)
        else:
            self.complete = True  # http.disconnect
        return message

    async def read_all(self) -> bytes | None:
        """The whole body, or None when the client disconnected first."""
        chunks = []
        while not self.complete:
            message = await self()
            if message["type"] != "http.request":
                return None
            chunks.append(message.get("body", b""))
        return b"".join(chunks)


def _replay(body: bytes, receive):
    """A ``receive`` that hands over an already-read body, then waits on the real one."""
    given = False

    async def replay() -> dict[str, Any]:
        nonlocal given
        if not given:
            given = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


class Guard:
    """Request ids, body caps and timeouts, key-slot release on answer, metrics, access log."""

    def __init__(self, app, settings: Settings, metrics: Metrics) -> None:
        self.app = app
        self.settings = settings
        self.metrics = metrics

    def _upload_limit(self, path: str) -> int | None:
        """Body cap of an upload endpoint; None for every other endpoint (JSON bodies)."""
        if path.startswith("/v1/check/batch"):
            return self.settings.body_limit(self.settings.max_files)
        if path.startswith("/v1/check") or path in ("/v1/complaints", "/v1/references"):
            return self.settings.body_limit(1)
        return None

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        upload_limit = self._upload_limit(path)
        headers = scope.get("headers", ())
        declared_raw = next((v for k, v in headers if k == b"content-length"), None)
        declared = int(declared_raw) if declared_raw is not None and declared_raw.isdigit() else None
        chunked = any(k == b"transfer-encoding" for k, _ in headers)
        given = next((v.decode("latin-1") for k, v in headers if k == b"x-request-id"), "")
        # A caller's request id is kept when it is safe to echo and log; otherwise we make one.
        request_id = given if REQUEST_ID_RE.match(given) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        status = 500
        t0 = time.perf_counter()
        body = TimedBody(receive, upload_limit if upload_limit is not None else self.settings.max_json_bytes,
                         declared, self.settings)

        async def counting_send(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                _answered(scope)
                message = {**message, "headers": [*message.get("headers", ()),
                                                  (b"x-request-id", request_id.encode("latin-1"))]}
            await send(message)

        try:
            app_receive = body
            if upload_limit is None and (chunked or (declared or 0) > 0):
                try:
                    data = await body.read_all()
                except (PayloadTooLargeError, BodyTimeoutError) as exc:
                    await send_error(counting_send, exc, self.settings)
                    return
                if data is None:
                    status = CLIENT_GONE
                    return
                app_receive = _replay(data, receive)
            await self.app(scope, app_receive, counting_send)
        finally:
            _answered(scope)
            seconds = time.perf_counter() - t0
            route = scope.get("route")
            name = getattr(route, "path", None) or "unmatched"
            self.metrics.observe_request(scope.get("method", ""), name, status, seconds)
            if access_log.isEnabledFor(logging.INFO):
                principal = scope.get("state", {}).get("principal")
                client = scope.get("client") or ("", 0)
                access_log.info("request", extra={
                    "request_id": request_id, "method": scope.get("method", ""), "path": scope.get("path", ""),
                    "route": name, "status": status, "latency_ms": round(seconds * 1000, 3), "bytes_in": body.seen,
                    "client": client[0], "key_id": getattr(principal, "key_id", None)})
