"""Errors: what the gateway returns to clients (OpenAI's error shape by default), and config problems."""

from __future__ import annotations

from typing import Any

from interlock.core import jsonutil


class GatewayError(Exception):
    """An error for the client: an HTTP status plus the OpenAI error body.

    ``type``/``code`` follow OpenAI's vocabulary so SDKs map them to the right
    exception class (``invalid_request_error``, ``rate_limit_error``, ...).
    """

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.code = code
        self.param = param
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def encode(self) -> bytes:
        return jsonutil.dumps(self.body())


def bad_request(message: str, *, param: str | None = None, code: str | None = "invalid_value") -> GatewayError:
    return GatewayError(400, message, param=param, code=code)


def not_found(message: str, *, code: str = "model_not_found", param: str | None = "model") -> GatewayError:
    return GatewayError(404, message, code=code, param=param)


class ConfigError(Exception):
    """One or more config problems, each as ``(key_path, message)``."""

    def __init__(self, problems: list[tuple[str, str]], source: str | None = None) -> None:
        self.problems = problems
        self.source = source
        where = f" in {source}" if source else ""
        lines = "\n".join(f"  {path}: {msg}" if path else f"  {msg}" for path, msg in problems)
        super().__init__(f"invalid configuration{where}:\n{lines}")
