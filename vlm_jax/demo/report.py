"""The demo's report: index.html with tables and pictures, and metrics.json."""

import html
import os
from typing import Any, Sequence

from vlm_jax.data import files as files_lib

_STYLE = """
body { font-family: sans-serif; max-width: 1100px; margin: 2em auto; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
td, th { border: 1px solid #ccc; padding: 0.3em 0.7em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
img { max-width: 100%; border: 1px solid #ddd; margin: 0.3em 0 1.5em; }
code { background: #f4f4f4; padding: 0 0.2em; }
"""


def table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
  """An HTML table; floats in [0, 1] with a '%' header hint are shown as percentages."""
  def cell(value):
    if isinstance(value, float):
      return f'{value:.3g}'
    return html.escape(str(value))
  head = ''.join(f'<th>{html.escape(h)}</th>' for h in header)
  body = ''.join('<tr>' + ''.join(f'<td>{cell(v)}</td>' for v in row) + '</tr>' for row in rows)
  return f'<table><tr>{head}</tr>{body}</table>'


def percent(value: float) -> str:
  return f'{100 * value:.1f}%'


def write(report_dir: str, title: str, sections: Sequence[tuple[str, str]],
          metrics: dict[str, Any]) -> str:
  """Writes index.html (sections: (heading, HTML body)) and metrics.json; returns the HTML path."""
  os.makedirs(report_dir, exist_ok=True)
  files_lib.write_json(os.path.join(report_dir, 'metrics.json'), metrics)
  parts = [f'<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}'
           f'</title><style>{_STYLE}</style></head><body><h1>{html.escape(title)}</h1>']
  for heading, body in sections:
    parts.append(f'<h2>{html.escape(heading)}</h2>\n{body}')
  parts.append('</body></html>\n')
  path = os.path.join(report_dir, 'index.html')
  files_lib.write_text(path, '\n'.join(parts))
  return path


def image(src: str, caption: str) -> str:
  return (f'<figure><img src="{html.escape(src)}" alt="{html.escape(caption)}">'
          f'<figcaption>{html.escape(caption)}</figcaption></figure>')
