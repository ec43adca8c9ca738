"""What the ``sonic`` commands share: tritonserver booleans, serve's options, progress bars.

``sonic serve``'s options are made from the flag table
(:data:`sonic.server.flags.FLAGS`), which also builds the settings and the
``--workers`` children's command lines, so each flag is written once.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from sonic.server.flags import FLAGS, Flag, default

_TRUE = {"1", "true", "yes", "on", "t", "y"}
_FALSE = {"0", "false", "no", "off", "f", "n"}


class _Bool(click.ParamType):
    """tritonserver-style boolean: ``--allow-http=false``."""

    name = "boolean"

    def convert(
        self, value: object, param: click.Parameter | None, ctx: click.Context | None
    ) -> bool:
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        self.fail(f"{value!r} is not a boolean; use true or false", param, ctx)


BOOL = _Bool()


def _click_type(flag: Flag) -> Any:
    if flag.kind == "bool":
        return BOOL
    if flag.kind == "int":
        return click.IntRange(min=flag.minimum) if flag.minimum is not None else int
    if flag.kind == "path":
        return click.Path(path_type=Path)
    if flag.kind == "choice":
        return click.Choice(flag.choices)
    return float if flag.kind == "float" else str


def _option(flag: Flag) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    extra: dict[str, Any] = {}
    if flag.kind == "bool":  # --flag alone means true; --flag=false as tritonserver
        extra = {"is_flag": False, "flag_value": "true"}
    if flag.envvar:
        extra.update(envvar=flag.envvar, show_envvar=True)
    return click.option(flag.name, *flag.aliases, flag.dest, type=_click_type(flag),
                        default=default(flag), multiple=flag.multiple, required=flag.required,
                        hidden=flag.hidden, help=flag.help or None, show_default=True,
                        **extra)  # fmt: skip


def serve_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """Every flag of :data:`~sonic.server.flags.FLAGS` as a click option, in the table's order."""
    for flag in reversed(FLAGS):
        f = _option(flag)(f)
    return f


def progress(total: int, what: str) -> tuple[object, object]:
    """A rich progress bar and a callback that advances it by n."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    bar = Progress("[progress.description]{task.description}", BarColumn(),
                   MofNCompleteColumn(), TimeRemainingColumn())  # fmt: skip
    task = bar.add_task(what, total=total)
    return bar, lambda n: bar.advance(task, n)
