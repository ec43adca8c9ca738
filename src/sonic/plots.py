"""Plot style and self-contained HTML pages, shared by the workflow and performance reports.

Figures use mplhep's CMS style on the Agg backend (no display needed) and are
embedded in the page as base64 PNG, so one HTML file carries everything.
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Any


def pyplot() -> Any:
    """matplotlib.pyplot on Agg with the CMS style."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import mplhep

    plt.style.use(mplhep.style.CMS)
    return plt


def png(fig: Any, path: Path | None = None) -> str:
    """The figure as base64 PNG (and written to ``path`` if given); closes it."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    pyplot().close(fig)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(buf.getvalue())
    return base64.b64encode(buf.getvalue()).decode()


def img(png_b64: str) -> str:
    return f"<img src='data:image/png;base64,{png_b64}'>"


def html_table(header: list[str], rows: list[list[Any]]) -> str:
    def cell(v: Any) -> str:
        return html.escape(f"{v:.3g}" if isinstance(v, float) else str(v))

    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def write_html(path: Path, title: str, sections: list[tuple[str, str]]) -> Path:
    """A self-contained page: each section is (heading, HTML body); images inline."""
    body = "\n".join(f"<h2>{html.escape(h)}</h2>\n{b}" for h, b in sections)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto}"
        "table{border-collapse:collapse}td,th{border:1px solid #999;padding:4px 8px;"
        "text-align:right}img{max-width:100%}</style></head><body>"
        f"<h1>{html.escape(title)}</h1>\n{body}</body></html>"
    )
    return path
