"""The documentation: every command it shows is one that works here, or is marked illustrative.

A block marked ``<!-- illustrative -->`` on the line before it (usage synopses with
placeholders, examples that need a cluster) is skipped.  In the others:

- a ``sonic`` command must parse as the CLI parses it (subcommand, flags, choices,
  values); the paths it names are not checked, since the docs name the user's files;
- a benchmark or script must exist, and each ``--flag`` it is given must be one it has;
- ``kubectl -k DIR`` must name a kustomization that exists, ``make T`` a target;
- Python examples must compile.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import click
import pytest

from sonic.cli.main import main

ROOT = Path(__file__).resolve().parents[2]
DOCS = sorted((ROOT / "docs").glob("*.md"))
FENCE = re.compile(r"(<!-- illustrative -->\n)?```([^\n]*)\n(.*?)```", re.S)
SHELL = ("", "console", "bash", "sh", "shell")


def blocks(page: Path, languages: tuple[str, ...]) -> list[str]:
    return [body for marked, lang, body in FENCE.findall(page.read_text())
            if not marked and lang.strip() in languages]  # fmt: skip


def lines(page: Path) -> list[str]:
    """Every shell command line, continuations joined, comments and prompts removed."""
    out = []
    for body in blocks(page, SHELL):
        for line in body.replace("\\\n", " ").splitlines():
            line = line.strip().removeprefix("$ ").split(" #", 1)[0].strip()
            if line and not line.startswith("#"):
                out.append(line.removesuffix("&").strip())
    return out


def commands(page: Path) -> list[str]:
    """The ``sonic`` command lines."""
    return [line for line in (x.removeprefix(".venv/bin/") for x in lines(page))
            if line.startswith("sonic ")]  # fmt: skip


def parse(line: str) -> None:
    """Resolve the subcommand chain and parse its arguments, running nothing."""
    args = shlex.split(line)[1:]
    command: click.Command = main
    ctx = command.make_context("sonic", list(args), resilient_parsing=False)
    while isinstance(command, click.Group):
        rest = [*ctx._protected_args, *ctx.args]
        if not rest:
            return
        name, sub, rest = command.resolve_command(ctx, rest)
        assert sub is not None, f"no command {name!r}"
        command = sub
        ctx = command.make_context(name or "", list(rest), parent=ctx)


def _paths(command: click.Command) -> list[click.Path]:
    found = [p.type for p in command.params if isinstance(p.type, click.Path)]
    for sub in getattr(command, "commands", {}).values():
        found += _paths(sub)
    return found


@pytest.fixture
def any_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every path parameter accepts a path that does not exist (here)."""
    for t in _paths(main):
        monkeypatch.setattr(t, "exists", False)
        monkeypatch.setattr(t, "file_okay", True)
        monkeypatch.setattr(t, "dir_okay", True)


@pytest.mark.parametrize("page", DOCS, ids=[p.name for p in DOCS])
def test_every_sonic_command_in_the_docs_parses(page: Path, any_path: None) -> None:
    failures = []
    for line in commands(page):
        try:
            parse(line)
        except (click.ClickException, AssertionError) as err:
            msg = err.format_message() if isinstance(err, click.ClickException) else str(err)
            failures.append(f"{line}\n    -> {msg}")
    assert not failures, "\n".join(failures)


def test_the_docs_show_commands() -> None:
    """The check above must see something: the getting-started page's server command."""
    assert any(c.startswith("sonic serve") for c in commands(ROOT / "docs" / "getting-started.md"))


def _check_other(line: str) -> str | None:
    """What is wrong with a non-sonic command line, or None."""
    words = shlex.split(line)
    if words[0] in ("python", "python3", ".venv/bin/python", "bash"):
        words = words[1:]
    script = words[0] if words else ""
    if script.startswith(("benchmarks/", "scripts/")):
        if not (ROOT / script).is_file():
            return f"{script} does not exist"
        if script.endswith(".py"):
            flags = {w.split("=")[0] for w in words[1:] if w.startswith("--")}
            if flags:
                help_text = subprocess.run([sys.executable, str(ROOT / script), "--help"],
                                           capture_output=True, text=True, timeout=120).stdout
                unknown = sorted(f for f in flags if f not in help_text)
                if unknown:
                    return f"{script} has no {', '.join(unknown)}"
    elif words[0] == "kubectl" and "-k" in words:
        target = words[words.index("-k") + 1]
        if not (ROOT / target / "kustomization.yaml").is_file():
            return f"no kustomization in {target}"
    elif words[0] == "make":
        makefile = (ROOT / "Makefile").read_text()
        missing = [t for t in words[1:] if not re.search(rf"^{re.escape(t)}:", makefile, re.M)]
        if missing:
            return f"no make target {missing}"
    return None


@pytest.mark.parametrize("page", DOCS, ids=[p.name for p in DOCS])
def test_every_other_command_in_the_docs_works_here(page: Path) -> None:
    failures = [f"{line}\n    -> {why}" for line in lines(page)
                if line not in commands(page) and (why := _check_other(line))]  # fmt: skip
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("page", DOCS, ids=[p.name for p in DOCS])
def test_python_examples_compile(page: Path) -> None:
    for body in blocks(page, ("python",)):
        compile(body, f"{page.name} example", "exec")
