"""Domain errors. Each carries its HTTP status; one handler renders ``{"error", "detail"}``."""

from __future__ import annotations

from typing import Any


class AppError(Exception):
    status_code = 400
    error = "bad_request"

    def __init__(self, detail: Any, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail if isinstance(detail, str) else repr(detail))
        self.detail = detail
        self.headers = headers


class InvalidInput(AppError):
    status_code = 422
    error = "invalid_input"


class InvalidAddressError(InvalidInput):
    error = "invalid_address"


class NotFound(AppError):
    status_code = 404
    error = "not_found"


class Gone(AppError):
    status_code = 410
    error = "gone"


class Unauthorized(AppError):
    status_code = 401
    error = "unauthorized"


class Forbidden(AppError):
    status_code = 403
    error = "forbidden"


class Conflict(AppError):
    status_code = 409
    error = "conflict"


class Unavailable(AppError):
    """A dependency failed: never answer as if the address were clear."""

    status_code = 503
    error = "unavailable"
