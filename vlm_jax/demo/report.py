"""The demo's report: index.html with tables and pictures, and metrics.json."""

import html
import os
import re
import shutil
import subprocess
import tempfile
from typing import Any, Sequence

from PIL import Image, ImageChops

from vlm_jax.data import files as files_lib

_STYLE = """
body { font-family: sans-serif; max-width: 1240px; margin: 2em auto; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
td, th { border: 1px solid #ccc; padding: 0.3em 0.7em; text-align: left; }
td.number { text-align: right; white-space: nowrap; }
figure { margin: 0.3em 0 1.5em; }
img { max-width: 100%; border: 1px solid #ddd; }
figcaption { font-size: 0.9em; color: #555; }
.gallery { display: flex; flex-wrap: wrap; gap: 1em; align-items: flex-start; }
.gallery figure { flex: 1 1 0; min-width: 0; margin: 0; }
code { background: #f4f4f4; padding: 0 0.2em; }
"""


# A cell that is a number, a percentage, or one with its interval: '44.4% [38.8, 50.4]'.
_NUMBER = re.compile(r'-?[\d.]+%?( \[-?[\d.]+, -?[\d.]+\])?')


def table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
  """An HTML table; floats shown to 3 significant digits, numbers right-aligned."""
  def cell(value):
    text = f'{value:.3g}' if isinstance(value, float) else str(value)
    number = isinstance(value, (int, float)) or _NUMBER.fullmatch(text)
    return f'<td class="number">{html.escape(text)}</td>' if number else (
        f'<td>{html.escape(text)}</td>')
  head = ''.join(f'<th>{html.escape(h)}</th>' for h in header)
  body = ''.join('<tr>' + ''.join(cell(v) for v in row) + '</tr>' for row in rows)
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


def gallery(images: Sequence[tuple[str, str]]) -> str:
  """(src, caption) pictures side by side, wrapping when the page is narrow."""
  return '<div class="gallery">' + ''.join(image(src, caption) for src, caption in images) + (
      '</div>')


BROWSERS = ('chromium', 'chromium-browser', 'google-chrome')


def browser() -> str | None:
  """The headless-capable browser on PATH (Debian's `chromium` first), or None."""
  return next((path for path in map(shutil.which, BROWSERS) if path), None)


def screenshot(html_path: str, png: str, width: int = 1280, height: int = 16000) -> bool:
  """Renders `html_path` in headless Chromium into `png`, cut below the page's content.

  The window is `height` tall (Chromium's --screenshot takes the window, not the
  page). Returns False, and writes nothing, where there is no browser or it fails:
  the picture is a convenience, never a reason for a run to fail.
  """
  found = browser()
  if found is None:
    return False
  with tempfile.TemporaryDirectory() as scratch:
    # Chromium picks the format by the name's extension: no atomic_path '.tmp' name here.
    shot = os.path.join(scratch, 'page.png')
    try:
      # --no-sandbox: Chromium refuses to start as root otherwise (CI containers).
      subprocess.run([found, '--headless', '--no-sandbox', '--disable-gpu', '--hide-scrollbars',
                      f'--window-size={width},{height}', f'--screenshot={shot}',
                      'file://' + os.path.abspath(html_path)],
                     check=True, capture_output=True, timeout=180)
      with Image.open(shot) as image:
        page = image.convert('RGB')
    except (OSError, subprocess.SubprocessError):
      return False
  # The page's background is white: everything below its last content is window.
  content = ImageChops.difference(page, Image.new('RGB', page.size, 'white')).getbbox()
  bottom = min(page.height, (content[3] if content else 0) + 20)
  with files_lib.atomic_path(png) as tmp:
    page.crop((0, 0, page.width, bottom)).save(tmp, format='PNG')
  return True


def save_figure(fig, path: str) -> None:
  """Writes a matplotlib `fig` as a PNG at 100 dpi (a finished file or none) and closes it."""
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  with files_lib.atomic_path(path) as tmp:
    fig.savefig(tmp, dpi=100, format='png')
  plt.close(fig)
