"""Reading a multipart upload with every byte and part counted, whatever the transfer
encoding (aiohttp's body limit covers read()/post(), not a streamed multipart): one file
part and a few small fields. Shared by /api/generate and /api/avatars."""

from __future__ import annotations

from dataclasses import dataclass, field

from aiohttp import BodyPartReader, web

from rtc.http.errors import ApiError, error_text

MAX_PARTS = 8
"""Parts an upload may have: the file, its few fields, and a few that clients add on their
own; more is refused before it is read."""
MAX_FIELD_BYTES = 10_000
"""Bytes of one field other than the file."""
MAX_FIELDS_BYTES = 64 * 1024
"""Bytes all the parts but the file may add up to (their headers are aiohttp's)."""


@dataclass
class Upload:
    """What a multipart body held."""

    file: bytes | None = None
    filename: str | None = None
    fields: dict[str, str] = field(default_factory=dict)


def megabytes(size: int) -> str:
    return f"{size / (1024 * 1024):g} MB"


async def read_upload(request: web.Request, file_field: str, limit: int, fields: str) -> Upload:
    """The body's ``file_field`` (at most ``limit`` bytes) and small fields; ApiError 400 for
    a broken or overlong body, 413 past the limits. ``fields`` names them for messages."""
    budget = limit + MAX_FIELDS_BYTES  # the file plus its few small fields
    if (request.content_length or 0) > budget:
        raise ApiError(413, f"upload is larger than the limit of {megabytes(limit)}")
    upload = Upload()
    read = 0
    try:
        reader = await request.multipart()
        parts = 0
        async for part in reader:
            parts += 1
            if parts > MAX_PARTS:
                raise ApiError(
                    400,
                    f"the upload has more than {MAX_PARTS} parts; send "
                    f"one '{file_field}' file and the fields {fields}",
                )
            if not isinstance(part, BodyPartReader):
                raise ApiError(400, "nested multipart bodies are not accepted")
            if part.name == file_field:
                if upload.file is not None:
                    raise ApiError(400, f"send one '{file_field}' file, not several")
                upload.file = await _read_limited(part, min(limit, budget - read), limit)
                upload.filename = part.filename
                read += len(upload.file)
            else:
                value = await _read_limited(part, min(MAX_FIELD_BYTES, budget - read), limit)
                read += len(value)
                if part.name is not None:
                    upload.fields[part.name] = value.decode("utf-8", "replace")
    except (ValueError, AssertionError) as e:  # aiohttp's parser on a broken body
        raise ApiError(400, f"malformed multipart body: {error_text(e)}") from None
    return upload


async def _read_limited(part: BodyPartReader, limit: int, upload_limit: int) -> bytes:
    """A part's bytes; ApiError(413) as soon as more than ``limit`` arrive."""
    chunks: list[bytes] = []
    size = 0
    while chunk := await part.read_chunk(65536):
        size += len(chunk)
        if size > limit:
            raise ApiError(
                413,
                f"upload is larger than the limit of {megabytes(upload_limit)} "
                f"(at most {MAX_PARTS} parts, fields of at most "
                f"{MAX_FIELD_BYTES} bytes)",
            )
        chunks.append(chunk)
    return b"".join(chunks)
