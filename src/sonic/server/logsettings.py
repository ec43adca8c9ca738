"""Triton's logging extension: read and change the server's log settings at run time.

``GET/POST /v2/logging`` and gRPC ``LogSettings`` (``tritonclient``'s
``get_log_settings`` / ``update_log_settings``) with Triton's keys.  The
settings drive the ``sonic`` loggers.  ``log_file`` is reported but cannot be
changed over the network: a remote caller choosing a path the server writes
to is a file-write primitive.  Changing settings needs the admin role when
authentication is on (:mod:`sonic.server.frontends.auth`).
"""

from __future__ import annotations

import logging
from typing import Any

from sonic.errors import InvalidArgument

TYPES: dict[str, type] = {
    "log_file": str,
    "log_info": bool,
    "log_warning": bool,
    "log_error": bool,
    "log_verbose_level": int,
    "log_format": str,
}
FORMATS = {
    "default": "%(asctime)s %(levelname).1s %(name)s] %(message)s",
    "ISO8601": "%(asctime)s %(levelname)s %(name)s] %(message)s",
}


class LogSettings:
    def __init__(self, verbose: int = 0, info: bool = True) -> None:
        self.values: dict[str, Any] = {
            "log_file": "", "log_info": info, "log_warning": True, "log_error": True,
            "log_verbose_level": verbose, "log_format": "default",
        }  # fmt: skip

    def get(self) -> dict[str, Any]:
        return dict(self.values)

    def update(self, changes: dict[str, Any]) -> dict[str, Any]:
        """Check every change first, then apply them all (none applied on an error)."""
        for key, value in changes.items():
            kind = TYPES.get(key)
            if kind is None:
                raise InvalidArgument(
                    f"unknown log setting '{key}'; the settings are {', '.join(TYPES)}"
                )
            if value is None:
                continue
            if kind is int and (isinstance(value, bool) or not isinstance(value, int)
                                or value < 0):  # fmt: skip
                raise InvalidArgument(f"log setting '{key}' must be a non-negative integer")
            if kind is not int and not isinstance(value, kind):
                raise InvalidArgument(f"log setting '{key}' must be a {kind.__name__}")
            if key == "log_file" and value != self.values["log_file"]:
                raise InvalidArgument(
                    "log_file cannot be changed over the network; set it when starting the server"
                )
            if key == "log_format" and value not in FORMATS:
                raise InvalidArgument(f"log_format must be one of {', '.join(FORMATS)}")
        self.values.update({k: v for k, v in changes.items() if v is not None})
        self._apply()
        return self.get()

    def _apply(self) -> None:
        v = self.values
        if v["log_verbose_level"] > 0:
            level = logging.DEBUG
        elif v["log_info"]:
            level = logging.INFO
        elif v["log_warning"]:
            level = logging.WARNING
        elif v["log_error"]:
            level = logging.ERROR
        else:
            level = logging.CRITICAL + 1
        logging.getLogger("sonic").setLevel(level)
        formatter = logging.Formatter(FORMATS[v["log_format"]])
        for handler in logging.getLogger().handlers:
            handler.setFormatter(formatter)
