"""The command's exit codes, and the one exception type that carries a message and its code.

Scripts rely on these numbers (docs/cli.md): change them only with a major version.
"""

from __future__ import annotations

OK = 0
FAILED = 1
"""The version or generation failed, or the API refused the request (404, 400, 409, ...)."""
USAGE = 2
"""Wrong arguments (click's own code for usage errors)."""
TIMEOUT = 3
"""The wait outlived --timeout, or cadpipe answered 504."""
AUTH = 4
"""No token, a wrong or revoked one (401), or one without the right (403)."""
UNREACHABLE = 5
"""No connection to the API, no answer in time, or cadpipe unavailable (503)."""
INTERRUPTED = 130
"""Ctrl-C, as shells report SIGINT."""


class CliError(Exception):
    """A failure to show the user as one message (and a hint), ending the command with
    exit_code."""

    def __init__(self, message: str, exit_code: int = FAILED, *, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code
        self.hint = hint

    def as_json(self) -> dict[str, object]:
        body: dict[str, object] = {"message": self.message, "exit_code": self.exit_code}
        if self.hint:
            body["hint"] = self.hint
        return body


class ApiError(CliError):
    """The API answered with an error status and its JSON body {code, message, details}."""

    def __init__(
        self,
        message: str,
        exit_code: int,
        *,
        http_status: int,
        code: int | None = None,
        hint: str = "",
    ) -> None:
        super().__init__(message, exit_code, hint=hint)
        self.http_status = http_status
        self.code = code

    def as_json(self) -> dict[str, object]:
        return {**super().as_json(), "http_status": self.http_status, "code": self.code}


class NotSupported(ApiError):
    """The server has no such route yet (501, or 404 "no route"): an older cadpipe."""


class WaitTimeout(CliError):
    def __init__(self, message: str) -> None:
        super().__init__(message, TIMEOUT)
