"""Request bodies held to Switchboard's limit, chunked ones included.

Flask refuses a Content-Length over the request's `max_content_length` (413); a body without a
length (chunked) gets the same answer here rather than being cut at the limit and handed to the
route as a prefix. Applied by Switchboard's blueprints to their own requests only.
"""

from __future__ import annotations

import io

from flask import request

from switchboard_server.core.errors import ProtocolError


def read_unsized_body() -> None:
    """Hold a chunked body to the limit: see `BoundedBody`."""
    limit = request.max_content_length
    environ = request.environ
    if limit is None or request.content_length is not None or "HTTP_TRANSFER_ENCODING" not in environ:
        return
    if environ.get("wsgi.input_terminated"):  # else Werkzeug gives routes no body at all
        environ["wsgi.input"] = BoundedBody(environ["wsgi.input"], limit)


class BoundedBody(io.RawIOBase):
    """A body without a length, read whole at its first read: over the limit, that read is 413.

    Werkzeug stops reading such a body at MAX_CONTENT_LENGTH without saying whether more was
    sent, so a route would parse the first 64 KiB of a bigger body as if it were all of it.
    Reading one byte past the limit tells. The refusal comes where the route reads the body,
    after its own checks (a key, a signature's app), as for a Content-Length over the limit.
    """

    def __init__(self, source: io.RawIOBase, limit: int) -> None:
        super().__init__()
        self._source = source
        self._limit = limit
        self._body: io.BytesIO | None = None

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        if self._body is None:
            data = self._source.read(self._limit + 1)
            if len(data) > self._limit:
                raise ProtocolError("too_large", f"body larger than {self._limit} bytes")
            self._body = io.BytesIO(data)
        return self._body.readinto(buffer)
