"""A small, self-contained HTML report builder (figures embedded as base64 PNG; no external files or scripts)."""

from __future__ import annotations

import base64
import dataclasses
import html

_CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:0;color:#1d2733;background:#f4f6f8}
header{background:#1f3347;color:#fff;padding:18px 32px} header h1{margin:0;font-size:24px}
header p{margin:4px 0 0;opacity:.85}
main{max-width:1180px;margin:0 auto;padding:16px 32px 48px}
section{background:#fff;border-radius:8px;padding:16px 22px;margin:18px 0;box-shadow:0 1px 3px rgba(0,0,0,.08)}
h2{font-size:19px;margin:4px 0 12px;border-bottom:2px solid #e3e8ee;padding-bottom:6px}
h3{font-size:15px;margin:14px 0 6px}
table{border-collapse:collapse;font-size:13px;margin:6px 0 10px} th,td{border:1px solid #d8dee5;padding:4px 8px;text-align:left}
th{background:#eef2f6} td.num{text-align:right;font-variant-numeric:tabular-nums}
figure{display:inline-block;margin:6px 10px 10px 0;vertical-align:top} figure img{max-width:100%;border:1px solid #d8dee5}
figcaption{font-size:12px;color:#55606c;max-width:540px}
.flag{color:#a3140f;font-weight:600} .ok{color:#22703a;font-weight:600} .muted{color:#6a7682;font-size:12px}
.notice{background:#fff4e5;border-left:5px solid #e38b00;padding:10px 14px;font-weight:600}
.status-ok{color:#22703a}.status-skipped{color:#8a6d00}.status-failed{color:#a3140f}
"""


@dataclasses.dataclass
class Figure:
    png: bytes
    caption: str
    width_px: int | None = None
    fig_id: str = ""


class HtmlReport:
    """Collects sections (paragraphs, tables, figures) and renders one self-contained HTML page."""

    def __init__(self, title: str, subtitle: str = ""):
        self.title = title
        self.subtitle = subtitle
        self._sections: list[tuple[str, str, list[str]]] = []  # (id, title, html parts)

    def section(self, section_id: str, title: str) -> list[str]:
        parts: list[str] = []
        self._sections.append((section_id, title, parts))
        return parts

    @staticmethod
    def paragraph(text: str, css_class: str = "") -> str:
        cls = f' class="{css_class}"' if css_class else ""
        return f"<p{cls}>{html.escape(text)}</p>"

    @staticmethod
    def raw(markup: str) -> str:
        return markup

    @staticmethod
    def table(header: list[str], rows: list[list], flags: list[bool] | None = None, table_id: str = "") -> str:
        tid = f' id="{html.escape(table_id)}"' if table_id else ""
        out = [f"<table{tid}><thead><tr>" + "".join(f"<th>{html.escape(str(h))}</th>" for h in header) + "</tr></thead><tbody>"]
        for i, row in enumerate(rows):
            cls = ' class="flag"' if flags and flags[i] else ""
            cells = []
            for v in row:
                if isinstance(v, float):
                    v = f"{v:.1f}"
                num = ' class="num"' if _is_number(v) else ""
                cells.append(f"<td{num}>{html.escape(str(v))}</td>")
            out.append(f"<tr{cls}>" + "".join(cells) + "</tr>")
        out.append("</tbody></table>")
        return "".join(out)

    @staticmethod
    def figure(fig: Figure) -> str:
        data = base64.b64encode(fig.png).decode("ascii")
        width = f' width="{fig.width_px}"' if fig.width_px else ""
        fid = f' id="{html.escape(fig.fig_id)}"' if fig.fig_id else ""
        return (
            f'<figure{fid}><img alt="{html.escape(fig.caption)}"{width} src="data:image/png;base64,{data}"/>'
            f"<figcaption>{html.escape(fig.caption)}</figcaption></figure>"
        )

    def render(self) -> str:
        nav = " · ".join(f'<a href="#{sid}">{html.escape(t)}</a>' for sid, t, _ in self._sections)
        body = [
            f"<header><h1>{html.escape(self.title)}</h1><p>{html.escape(self.subtitle)}</p></header><main>",
            f'<p class="muted">{nav}</p>',
        ]
        for sid, title, parts in self._sections:
            body.append(f'<section id="{html.escape(sid)}"><h2>{html.escape(title)}</h2>{"".join(parts)}</section>')
        body.append("</main>")
        return (
            "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\"><title>{html.escape(self.title)}</title>"
            f"<style>{_CSS}</style></head><body>{''.join(body)}</body></html>"
        )


def _is_number(v) -> bool:
    if isinstance(v, (int, float)):
        return True
    try:
        float(str(v))
        return True
    except ValueError:
        return str(v) in ("–", "-")


def png_bytes_from_matplotlib(fig, dpi: int = 110) -> bytes:
    """Render a matplotlib figure to PNG bytes (and close it)."""
    import io

    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()
