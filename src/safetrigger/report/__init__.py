"""``safetrigger report RUN_DIR``: one self-contained HTML page about a run.

:func:`collect` reads the run dir (manifest, stage stats, ``eval/``) into one plain dict,
tolerating anything missing or malformed (it becomes a note on the page, never a traceback);
``plots`` turns that dict into inline SVG figures; :func:`write_report` renders the Jinja2
template with the CSS/JS inlined. The page fetches nothing: no CDN, no external assets.
"""

from safetrigger.report.collect import collect
from safetrigger.report.html import render_report, write_report

__all__ = ["collect", "render_report", "write_report"]
