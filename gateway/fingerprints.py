"""Derived fingerprints: a stable stand-in for the `system_fingerprint` a server did not send.

Pure: `gateway.provider` reads the server's model listing (an SDK call) and passes the entry here.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

# Fields of a /v1/models entry that change without the model changing: vLLM and llama.cpp's
# llama-server stamp `created` with the time of the request, vLLM's `permission` carries a fresh
# id and time. (Ollama's `created` is the model's own date; it is left out all the same.)
VOLATILE_MODEL_FIELDS = frozenset({"created", "permission", "permissions"})


def fingerprint_derive(*, base_url: str, model: str, entry: dict[str, Any] | None) -> str:
    """A stable stand-in for the `system_fingerprint` a server did not send.

    A hash of the server's address, the model name it answered with and what its model listing
    says about that model (id, owner, and whatever else it exposes: vLLM's `root` and
    `max_model_len`, llama-server's `meta` with the model's size and training context), less the
    fields that change by themselves. It changes when the listing does; what a server does not
    list (sampling code, hardware) it cannot see.
    """
    listed = {key: value for key, value in (entry or {}).items() if key not in VOLATILE_MODEL_FIELDS}
    canonical = json.dumps(
        {"base_url": base_url.rstrip("/"), "model": model, "listed": listed},
        sort_keys=True,
        separators=(",", ":"),
        default=str,
    )
    return "fp_derived_" + hashlib.sha256(canonical.encode()).hexdigest()[:16]
