"""An upload handler that enforces UPLOAD_MAX_BYTES while the request body streams in."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.files.uploadedfile import UploadedFile
from django.core.files.uploadhandler import FileUploadHandler, SkipFile
from django.http import HttpRequest


class SizeLimitUploadHandler(FileUploadHandler):
    """Counts each file's bytes and drops a file the moment it passes the limit.

    Installed first, it sees every chunk before the storing handlers behind it, passes the chunk
    on while the file is within the limit, and raises SkipFile once it is not: Django then
    discards what the other handlers kept (memory or temporary file) and skips the rest of that
    file, while the other files of the request are still parsed. The names of dropped files are
    kept in `oversized` so the view can report them.
    """

    def __init__(self, request: HttpRequest | None = None, *, limit: int | None = None) -> None:
        super().__init__(request)
        self.limit = settings.UPLOAD_MAX_BYTES if limit is None else limit
        self.oversized: list[str] = []
        self._declared_too_big = False

    def new_file(
        self,
        field_name: str,
        file_name: str,
        content_type: str,
        content_length: int | None,
        charset: str | None = None,
        content_type_extra: dict[str, bytes] | None = None,
    ) -> None:
        super().new_file(field_name, file_name, content_type, content_length, charset, content_type_extra)
        # Raising SkipFile here would run before the handlers behind us open their new file, and
        # Django's clean-up would close the previous file's buffer instead; skip on the first chunk.
        self._declared_too_big = content_length is not None and content_length > self.limit

    def receive_data_chunk(self, raw_data: bytes, start: int) -> bytes | None:
        if self._declared_too_big or start + len(raw_data) > self.limit:
            self.oversized.append(self.file_name or "upload")
            raise SkipFile
        return raw_data

    def file_complete(self, file_size: int) -> UploadedFile[Any] | None:
        return None  # the storing handlers behind us build the file
