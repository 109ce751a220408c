"""Render the report: the Jinja2 template in ``templates/`` with ``static/`` CSS and JS inlined,
the figures as inline SVG, and the samples as JSON in a ``<script type="application/json">``."""

from __future__ import annotations

import json
import re
from pathlib import Path

from safetrigger.atomic import atomic_write
from safetrigger.report.collect import DEFAULT_MAX_SAMPLES, collect

HERE = Path(__file__).parent
PLOTS = [  # (key → element id plot-<key>, title, caption)
    ("asr", "Attack success rate", "per benchmark and model, one panel per judge (lower is safer); error bars: 95% Wilson intervals"),
    ("activation", "<safe> activation rate", "share of responses with a complete <safe> block, per benchmark and model; error bars: 95% Wilson intervals"),
    ("tradeoff", "Over-refusal vs ASR", "one point per model: mean over-refusal against mean ASR; error bars: 95% bootstrap intervals over queries"),
    ("reward", "DPO reward histogram", "reward R of every scored response (build_dpo.stats.json)"),
    ("lengths", "Length by part", "mean tokens of think / safe / answer per model (all benchmarks, weighted by n)"),
]
RAW_LIMIT = 20_000  # characters of a stats file shown raw


def embed_json(obj) -> str:
    """JSON safe inside a <script> element: ``<``, ``>`` and ``&`` as \\u escapes (so ``</script>`` and
    ``<!--`` in model output cannot end or confuse the element); JSON.parse reads them back."""
    text = json.dumps(obj, ensure_ascii=False, default=str)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _fmt(v) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _duration(s) -> str:
    if not isinstance(s, (int, float)):
        return "–"
    return f"{s:.1f} s" if s < 120 else f"{int(s // 60)} min {int(s % 60):02d} s"


def _raw(stats) -> str:
    text = json.dumps(stats, indent=2, ensure_ascii=False, default=str)
    return text if len(text) <= RAW_LIMIT else text[:RAW_LIMIT] + f"\n… ({len(text) - RAW_LIMIT} more characters in the file)"


def _md(text):
    """Escape ``text`` and turn `backtick spans` into <code>."""
    from markupsafe import Markup, escape

    return Markup(re.sub(r"`([^`]+)`", r"<code>\1</code>", str(escape(text or ""))))


def render_report(data: dict, plots: dict | None = None) -> str:
    """The HTML page for ``collect()``'s dict (figures drawn here unless given)."""
    import jinja2

    from safetrigger.report.plots import make_plots

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(HERE / "templates")), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.globals.update(fmt=_fmt, duration=_duration, raw=_raw, md=_md)
    ev = data["eval"]
    samples = {"samples": ev["samples"], "total": ev["samples_total"], "cap": ev["samples_cap"]}
    return env.get_template("report.html.j2").render(
        d=data,
        plots=plots if plots is not None else make_plots(data),
        plot_list=PLOTS,
        samples_json=embed_json(samples),
        css=(HERE / "static" / "report.css").read_text(encoding="utf-8"),
        js=(HERE / "static" / "report.js").read_text(encoding="utf-8"),
    )


def write_report(run_dir: str | Path, output: str | Path | None = None, max_samples: int = DEFAULT_MAX_SAMPLES) -> Path:
    """Write the report of ``run_dir`` (default ``<run_dir>/report.html``) and return its path.
    Raises DataError only when ``run_dir`` is not a run dir."""
    data = collect(run_dir, max_samples=max_samples)
    out = Path(output) if output else Path(run_dir) / "report.html"
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(out) as f:
        f.write(render_report(data))
    return out
