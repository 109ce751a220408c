"""The report's figures as inline SVG strings (matplotlib, Agg backend, text kept as text).

Each ``plot_*`` function returns ``{"svg": str | None, "message": str | None}``: a figure, or
the reason there is none (the page shows that reason in the figure's place). Element ids
inside each SVG are prefixed with the plot's name so several figures can share one page.
Rates are drawn with their 95% intervals as error bars where results.json has them; each error
bar carries the id ``<plot>-ci-<panel>-<series>-<n>`` (so a reader, or a test, can find them).
"""

from __future__ import annotations

import io
import math
import re

# Part colours match the sample browser's (report.css): think / safe / answer.
PART_COLORS = {"think": "#6c8ebf", "safe": "#d79b00", "answer": "#82b366"}
LEGEND = {"fontsize": 8, "frameon": False, "loc": "upper left", "bbox_to_anchor": (1.0, 1.0)}  # beside the axes, never over bars
MODEL_COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"]


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)  # no display, no GUI toolkit
    import matplotlib.pyplot as plt

    return plt


def _rc():
    # svg.fonttype none: text stays <text> (small, searchable); fixed hashsalt: stable output.
    return {"svg.fonttype": "none", "svg.hashsalt": "safetrigger-report", "font.size": 9,
            "axes.spines.top": False, "axes.spines.right": False}


def to_svg(fig, prefix: str) -> str:
    """The figure as an ``<svg>`` element (no XML prolog) with ids prefixed by ``prefix``."""
    plt = _plt()
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None, "Creator": None})
    plt.close(fig)
    svg = buf.getvalue()
    svg = svg[svg.index("<svg"):]
    svg = re.sub(r'\bid="([^"]+)"', rf'id="{prefix}-\1"', svg)
    svg = re.sub(r"url\(#([^)]+)\)", rf"url(#{prefix}-\1)", svg)
    svg = re.sub(r'href="#([^"]+)"', rf'href="#{prefix}-\1"', svg)
    return svg


def _none(message: str) -> dict:
    return {"svg": None, "message": message}


def _colors(models: list[str]) -> dict[str, str]:
    return {m: MODEL_COLORS[i % len(MODEL_COLORS)] for i, m in enumerate(models)}


ERR = {"ecolor": "#333333", "elinewidth": 0.9, "capsize": 2.5}


def _yerr(errs: list | None, n: int, scale: float) -> list[list[float]] | None:
    """matplotlib's 2 x n asymmetric yerr from (below, above) pairs; None when there is none."""
    if not errs or not any(e is not None for e in errs):
        return None
    errs = (list(errs) + [None] * n)[:n]
    return [[scale * e[0] if e else 0.0 for e in errs], [scale * e[1] if e else 0.0 for e in errs]]


def _tag(container, gid: str) -> None:
    """Give an error bar's line collections SVG group ids ``<gid>-<n>`` (unique on the page once
    prefixed by the plot's name: ``gid`` names the panel and the series)."""
    for n, part in enumerate(container.lines[2] if container is not None else ()):
        part.set_gid(f"{gid}-{n}")


def _grouped(ax, cats: list[str], series: dict[str, list], colors: dict[str, str], pct: bool = True,
             errors: dict[str, list] | None = None, panel: int = 0) -> None:
    k = max(len(series), 1)
    width = 0.8 / k
    for i, (name, vals) in enumerate(series.items()):
        xs = [c + (i - (k - 1) / 2) * width for c in range(len(cats))]
        ys = [math.nan if v is None else (100 * v if pct else v) for v in vals]
        yerr = _yerr((errors or {}).get(name), len(vals), 100 if pct else 1)
        bars = ax.bar(xs, ys, width=width * 0.95, label=name, color=colors[name], yerr=yerr, error_kw=ERR)
        _tag(bars.errorbar, f"ci-{panel}-{i}")
    ax.set_xticks(range(len(cats)))
    ax.set_xticklabels(cats, rotation=30 if len(cats) > 3 else 0, ha="right" if len(cats) > 3 else "center")
    if pct:
        ax.set_ylim(0, 100)
    ax.grid(axis="y", alpha=0.3)


def plot_asr(series: dict) -> dict:
    """ASR per benchmark per model, one panel per judge (grouped bars)."""
    asr = series.get("asr") or {}
    if not asr:
        return _none("no ASR rows in eval/results.json (no harmful or jailbreak benchmark was evaluated)")
    plt = _plt()
    with plt.rc_context(_rc()):
        n_b = max(len(v["benchmarks"]) for v in asr.values())
        fig, axes = plt.subplots(1, len(asr), figsize=(max(4.0, 0.9 * n_b + 1.5) * len(asr), 3.4), squeeze=False, sharey=True)
        models = list(next(iter(asr.values()))["models"])
        colors = _colors(models)
        for panel, (ax, (judge, s)) in enumerate(zip(axes[0], asr.items())):
            _grouped(ax, s["benchmarks"], s["models"], colors, errors=s.get("errors"), panel=panel)
            ax.set_title(f"judge: {judge}")
        axes[0][0].set_ylabel("attack success rate (%)")
        axes[0][-1].legend(title="model", **LEGEND)
        return {"svg": to_svg(fig, "asr"), "message": None}


def plot_activation(series: dict) -> dict:
    """Share of responses with a complete ``<safe>`` block, per benchmark per model."""
    act = series.get("activation") or {}
    models = act.get("models") or {}
    if not any(v is not None for vs in models.values() for v in vs):
        return _none("no safe_rate in eval/results.json rows")
    plt = _plt()
    with plt.rc_context(_rc()):
        fig, ax = plt.subplots(figsize=(max(4.5, 0.8 * len(act["benchmarks"]) + 1.5), 3.4))
        _grouped(ax, act["benchmarks"], models, _colors(list(models)), errors=act.get("errors"))
        ax.set_ylabel("<safe> activation rate (%)")
        ax.legend(title="model", **LEGEND)
        return {"svg": to_svg(fig, "activation"), "message": None}


def plot_tradeoff(series: dict) -> dict:
    """Mean over-refusal (x) vs mean ASR (y), one point per model, one panel per judge."""
    tr = series.get("tradeoff") or {}
    if not tr:
        return _none("needs both ASR and over-refusal results for at least one model")
    plt = _plt()
    with plt.rc_context(_rc()):
        fig, axes = plt.subplots(1, len(tr), figsize=(4.2 * len(tr), 3.6), squeeze=False)
        models = list(dict.fromkeys(p["model"] for pts in tr.values() for p in pts))
        colors = _colors(models)
        for panel, (ax, (judge, pts)) in enumerate(zip(axes[0], tr.items())):
            for i, p in enumerate(pts):
                ax.scatter([100 * p["x"]], [100 * p["y"]], s=50, color=colors[p["model"]], label=p["model"], zorder=3)
                xe, ye = p.get("x_err"), p.get("y_err")
                if xe or ye:  # bootstrap intervals of the two category means
                    bar = ax.errorbar([100 * p["x"]], [100 * p["y"]], xerr=[[100 * xe[0]], [100 * xe[1]]] if xe else None,
                                      yerr=[[100 * ye[0]], [100 * ye[1]]] if ye else None, fmt="none", zorder=2, **ERR)
                    _tag(bar, f"ci-{panel}-{i}")
                ax.annotate(p["model"], (100 * p["x"], 100 * p["y"]), textcoords="offset points", xytext=(5, 4), fontsize=8)
            ax.set_xlim(-3, 103)
            ax.set_ylim(-3, 103)
            ax.set_xlabel("mean over-refusal (%)")
            ax.set_title(f"judge: {judge} (lower-left is better)")
            ax.grid(alpha=0.3)
        axes[0][0].set_ylabel("mean ASR, harmful + jailbreak (%)")
        return {"svg": to_svg(fig, "tradeoff"), "message": None}


def plot_reward(hist: dict | None) -> dict:
    """Reward histogram of the responses build-dpo scored (R → count)."""
    if hist is None:
        return _none("build-dpo not run: `safetrigger build-dpo CONFIG`")
    if hist.get("error"):
        return _none(hist["error"])
    plt = _plt()
    with plt.rc_context(_rc()):
        fig, ax = plt.subplots(figsize=(4.8, 3.0))
        xs = [r for r, _ in hist["bins"]]
        ax.bar([str(round(x, 3)) for x in xs], [c for _, c in hist["bins"]], color="#4c72b0")
        ax.set_xlabel("reward R")
        ax.set_ylabel("responses")
        ax.grid(axis="y", alpha=0.3)
        return {"svg": to_svg(fig, "reward"), "message": None}


def plot_lengths(series: dict) -> dict:
    """Mean tokens of think / safe / answer per model, stacked."""
    lengths = series.get("lengths") or {}
    if not lengths:
        return _none("no mean_tokens in eval/results.json rows")
    plt = _plt()
    with plt.rc_context(_rc()):
        models = list(lengths)
        fig, ax = plt.subplots(figsize=(max(3.5, 1.0 * len(models) + 2), 3.4))
        bottom = [0.0] * len(models)
        for part, color in PART_COLORS.items():
            vals = [lengths[m][part] for m in models]
            ax.bar(models, vals, bottom=bottom, color=color, label=part, width=0.6)
            bottom = [b + v for b, v in zip(bottom, vals)]
        ax.set_ylabel("mean tokens per response")
        handles, labels = ax.get_legend_handles_labels()
        ax.legend(handles[::-1], labels[::-1], **LEGEND)  # top part first, as stacked
        ax.grid(axis="y", alpha=0.3)
        return {"svg": to_svg(fig, "lengths"), "message": None}


def make_plots(data: dict) -> dict[str, dict]:
    """Every figure of the page, keyed by name; a figure that fails becomes its error message."""
    view = (data.get("eval") or {}).get("view")
    ev_msg = (data.get("eval") or {}).get("message") or "eval not run: `safetrigger eval CONFIG`"
    series = view["series"] if view else None
    makers = {
        "asr": lambda: plot_asr(series) if series is not None else _none(ev_msg),
        "activation": lambda: plot_activation(series) if series is not None else _none(ev_msg),
        "tradeoff": lambda: plot_tradeoff(series) if series is not None else _none(ev_msg),
        "reward": lambda: plot_reward(data.get("reward_histogram")),
        "lengths": lambda: plot_lengths(series) if series is not None else _none(ev_msg),
    }
    out = {}
    for name, make in makers.items():
        try:
            out[name] = make()
        except Exception as e:  # odd values in a results file must not cost the whole page
            out[name] = _none(f"could not draw this plot ({type(e).__name__}: {e})")
    return out
