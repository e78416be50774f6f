"""The report's HTML page: headline, warnings, summary, then every section, with the PNGs inlined.

The page is self-contained: every picture is a base64 PNG data URI, the style is inline, there is
no script and nothing to fetch. Warnings about ``eval.json`` (STALE, PARTIAL) stand at the top, above
the headline, so results that no longer describe the run are never read as current.
"""

from __future__ import annotations

import base64
import html

from mcl.report.data import ReportRun
from mcl.report.sections import Section

_STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1200px; margin: 2em auto; padding: 0 1em; color: #222; }
h1 { margin-bottom: 0.2em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: 0.2em; margin-top: 1.6em; }
figure { margin: 1em 0; } img { max-width: 100%; } figcaption { color: #555; font-size: 0.9em; }
.note { color: #8a5a00; background: #fff6e0; padding: 0.4em 0.8em; border-radius: 4px; }
.warning { color: #fff; background: #b00020; padding: 0.6em 0.9em; border-radius: 4px; font-weight: bold; }
.headline { font-size: 1.2em; background: #eef4ff; padding: 0.6em 0.9em; border-radius: 4px; }
.headline.stale { background: #f4f4f4; color: #666; }
table { border-collapse: collapse; margin: 0.5em 0; font-size: 0.9em; }
td, th { border: 1px solid #ddd; padding: 0.2em 0.6em; text-align: right; } th { background: #f4f4f4; }
dl { display: grid; grid-template-columns: max-content auto; gap: 0.1em 1em; } dt { font-weight: bold; }
"""


def _summary(run: ReportRun) -> str:
    config = run.config
    evaluation = run.evaluation
    if evaluation is None:
        eval_state = "not yet (run 'mcl eval')"
    else:
        eval_state = "; ".join(w.split(":", 1)[0] for w in evaluation.warnings()) or "current"
    items = {
        "run directory": str(run.root.resolve()),
        "modality": run.modality.name,
        "data": f"{config.data.source} ({config.data.path})",
        "model": f"{config.model.backbone}, width {config.model.width}" if run.modality.name == "images"
        else f"two-tower {config.multimodal.model}, embedding {config.multimodal.embed_dim}",
        "objective": f"{config.objective.name}, temperature {config.objective.temperature}",
        "MCL": f"{config.mcl.stages} stages, K={config.mcl.clusters}, negatives={config.mcl.negatives}, "
               f"init={config.mcl.init}",
        "training": f"{config.train.epochs} epochs per stage, batch {config.train.batch_size}, lr {config.train.lr}",
        "finished members": ", ".join(r.name for r in run.representations
                                      if len(r.members) == 1 or r.name.startswith("ensemble-")) or "none yet",
        "eval.json": eval_state,
    }
    return "<dl>" + "".join(f"<dt>{html.escape(k)}</dt><dd>{html.escape(v)}</dd>" for k, v in items.items()) + "</dl>"


def _section_html(section: Section) -> str:
    parts = [f"<h2>{html.escape(section.title)}</h2>"]
    parts += [f'<p class="note">{html.escape(note)}</p>' for note in section.notes]
    for picture in section.pictures:
        data = base64.b64encode(picture.png).decode()
        parts.append(f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(picture.name)}">'
                     f"<figcaption>{html.escape(picture.caption)}</figcaption></figure>")
    parts.append(section.table_html)
    return "\n".join(parts)


def _top(run: ReportRun, headline: str | None) -> str:
    """Warnings about eval.json, then the headline (marked stale when eval.json is not current)."""
    evaluation = run.evaluation
    warnings = evaluation.warnings() if evaluation else []
    parts = [f'<p class="warning">{html.escape(w)}</p>' for w in warnings]
    if headline:
        if warnings:
            parts.append(f'<p class="headline stale">Not current ({", ".join(w.split(":", 1)[0] for w in warnings)}'
                         f' eval.json): {html.escape(headline)}</p>')
        else:
            parts.append(f'<p class="headline">{html.escape(headline)}</p>')
    return "\n".join(parts)


def render_html(run: ReportRun, sections: list[Section], headline: str | None) -> str:
    """The whole page: warnings, headline, summary, then every section (no external resources)."""
    body = "\n".join(_section_html(section) for section in sections)
    title = f"MCL report: {run.root.resolve().name}"
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{_STYLE}</style></head>\n<body><h1>{html.escape(title)}</h1>\n{_top(run, headline)}\n"
            f"{_summary(run)}\n{body}\n</body></html>\n")
