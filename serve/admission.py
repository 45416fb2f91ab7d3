"""Who is inside the service: per-key request slots, and the images admitted to judging.

Two bounds, taken at two moments:

- a **key slot** once a request has authenticated (``max_inflight_per_key``; over it → 429 +
  Retry-After). It covers reading the body, so one key's slow uploads hold at most its own
  slots, never anybody else's;
- **admission** of a request's images once its body has arrived (``inflight_limit`` images;
  over it → 503 + Retry-After). A body still trickling in holds nothing here, so slow
  clients cannot lock everyone out; the body timeouts of the ASGI guard end them.

Everything here runs on the event-loop thread, so plain integers need no lock.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator

from brandguard.serve.errors import QueueFullError, TooManyRequestsError
from brandguard.serve.settings import Settings


class Ticket:
    """Images a request holds of the in-flight bound; some may be given back before the end."""

    def __init__(self, admission: "Admission", images: int) -> None:
        self.admission = admission
        self.images = images

    def give_back(self, images: int) -> None:
        """Return ``images`` the request will not work on (answered without decoding)."""
        images = max(0, min(images, self.images))
        self.images -= images
        self.admission.inflight -= images


class Admission:
    """Counters and bounds; read by /readyz and /metrics."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.per_key: dict[str, int] = {}
        self.inflight = 0  # images admitted and not answered
        self.requests = 0  # requests whose images are admitted (reported as at_door)
        self.rejected = 0  # images refused at admission (503)
        self.key_rejected = 0  # requests refused for their key's bound (429)

    def enter_key(self, key_id: str) -> Callable[[], None]:
        """Take one of ``key_id``'s slots; returns the (idempotent) release."""
        limit = self.settings.max_inflight_per_key
        held = self.per_key.get(key_id, 0)
        if held >= limit:
            self.key_rejected += 1
            raise TooManyRequestsError(f"this API key already has {held} requests in flight (at most {limit})",
                                       self.settings.retry_after_s)
        self.per_key[key_id] = held + 1
        released = False

        def release() -> None:
            nonlocal released
            if released:
                return
            released = True
            left = self.per_key.get(key_id, 1) - 1
            if left > 0:
                self.per_key[key_id] = left
            else:
                self.per_key.pop(key_id, None)

        return release

    @contextmanager
    def admit(self, images: int) -> Iterator[Ticket]:
        """Hold ``images`` of the in-flight bound for the duration of the block, or raise 503."""
        limit = self.settings.inflight_limit
        if self.inflight + images > limit:
            self.rejected += images
            raise QueueFullError(images, max(0, limit - self.inflight), self.settings.retry_after_s,
                                 what="too many images in flight")
        self.inflight += images
        self.requests += 1
        ticket = Ticket(self, images)
        try:
            yield ticket
        finally:
            self.inflight -= ticket.images
            self.requests -= 1
