"""Server-sent events (the `text/event-stream` format), for the chat page's stream and the API's.

The format: an event is `field: value` lines ended by a blank line; a `data` value cannot hold a
line break, so a multi-line payload is one `data:` line per line (the browser joins them with
"\\n"). A line that starts with ":" is a comment, which clients ignore.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from django.http import StreamingHttpResponse

LINE_BREAK = re.compile(r"\r\n|\r|\n")


def sse_event(data: str, *, event: str | None = None) -> str:
    """One event; every line of `data` gets its own "data:" field."""
    head = f"event: {event}\n" if event else ""
    if "\n" not in data and "\r" not in data:  # JSON on one line, every chunk of a stream
        return f"{head}data: {data}\n\n"
    return head + "".join(f"data: {line}\n" for line in LINE_BREAK.split(data)) + "\n"


def sse_comment(text: str) -> str:
    """A comment line: ignored by clients, but it makes proxies and browsers see the stream open."""
    return f": {text}\n\n"


def sse_response(events: Iterable[str]) -> StreamingHttpResponse:
    """A streaming response of server-sent events that no cache or proxy holds back."""
    response = StreamingHttpResponse(events, content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"  # nginx would otherwise hold the events back
    return response
