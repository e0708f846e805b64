"""Domain errors of the service core. They know nothing about HTTP: `HTTP_STATUS` is the one
table the edge (service/api.py) uses to translate them into `{"detail": ...}` responses."""

from __future__ import annotations

from typing import Final


class ServiceError(Exception):
    """Base class: a request or an operation the service refuses, with a clear reason."""

    @property
    def detail(self) -> str:
        return str(self.args[0]) if self.args else type(self).__name__


class SettingsError(ServiceError):
    """A CINESYNC_* setting is invalid or unsafe; the message names the key and the value."""


class NotReadyError(ServiceError):
    """No bundle is loaded yet (start-up, empty store, or every load failed)."""


class UnknownItemError(ServiceError):
    """The item id is not in the served bundle's catalogue."""


class InvalidRequestError(ServiceError):
    """A well-formed request with a value the service cannot use (e.g. an unknown genre)."""


class BundleLoadError(ServiceError):
    """A bundle could not be loaded: checksum, missing file, wrong shape or dtype, bad ONNX."""


class UnknownVersionError(ServiceError):
    """The requested model version is not in the store (or is incomplete)."""


class ReloadError(ServiceError):
    """A reload failed; the previously served bundle keeps serving."""


class ReloadInProgressError(ReloadError):
    """Another reload is running; reloads are serialised and a concurrent one is refused."""


class UnauthorizedError(ServiceError):
    """Missing or wrong admin token."""


class AdminDisabledError(ServiceError):
    """Admin endpoints are off because no admin token is configured."""


class RateLimitedError(ServiceError):
    """The client sent events faster than the configured rate; retry after `retry_after_s`."""

    def __init__(self, detail: str, retry_after_s: float = 1.0) -> None:
        super().__init__(detail)
        self.retry_after_s = retry_after_s


HTTP_STATUS: Final[dict[type[ServiceError], int]] = {
    UnknownItemError: 404,
    UnknownVersionError: 404,
    InvalidRequestError: 422,
    NotReadyError: 503,
    ReloadInProgressError: 409,
    ReloadError: 409,
    BundleLoadError: 409,
    UnauthorizedError: 401,
    AdminDisabledError: 403,
    RateLimitedError: 429,
}


def http_status(exc: ServiceError) -> int:
    """The HTTP status of a domain error (most specific class wins; 500 if unmapped)."""
    for cls in type(exc).__mro__:
        status = HTTP_STATUS.get(cls)
        if status is not None:
            return status
    return 500
