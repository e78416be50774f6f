"""Plain-text tables of ``eval.json`` rows (``{representation, attribute, probe, accuracy}``)."""

from __future__ import annotations

from typing import Any


def _grid(title: str, names: list[str], columns: list[str], cell: dict[tuple[str, str], str], width: int) -> str:
    """Rows ``names`` x ``columns`` of preformatted cells (``-`` where missing), right-aligned to ``width``."""
    name_width = max([len(n) for n in names] + [14])
    lines = [f"{title:<{name_width}}  " + "  ".join(f"{c:>{width}}" for c in columns)]
    for name in names:
        lines.append(f"{name:<{name_width}}  " + "  ".join(f"{cell.get((name, c), '-'):>{width}}" for c in columns))
    return "\n".join(lines)


def format_table(result: dict[str, Any], probe: str = "linear") -> str:
    """Accuracy (%) per representation (rows) and attribute (columns) for one probe."""
    rows = [r for r in result["rows"] if r["probe"] == probe]
    attributes = list(dict.fromkeys(r["attribute"] for r in rows))
    names = list(dict.fromkeys(r["representation"] for r in rows))
    cell = {(r["representation"], r["attribute"]): f"{100 * r['accuracy']:.1f}" for r in rows}
    return _grid(probe + " probe", names, attributes, cell, 8)


def format_tables(result: dict[str, Any], probes: tuple[str, ...] = ("linear", "knn")) -> str:
    """One table per attribute probe present in ``result`` (in ``probes`` order), then one for retrieval."""
    present = list(dict.fromkeys(r["probe"] for r in result["rows"]))
    tables = [format_table(result, probe) for probe in probes if probe in present]
    retrieval = [{**r, "attribute": r["probe"].removeprefix("retrieval-"), "probe": "retrieval"} for r in result["rows"]
                 if r["probe"].startswith("retrieval-")]
    if retrieval:
        tables.append(format_table({"rows": retrieval}, "retrieval"))
    views = [r for r in result["rows"] if r["attribute"] == "views"]
    if views:
        tables.append(format_label_free(views))
    return "\n\n".join(tables)


def format_label_free(rows: list[dict[str, Any]]) -> str:
    """The label-free rows (attribute ``views``): one column per measure, raw values (not percentages)."""
    probes = list(dict.fromkeys(r["probe"] for r in rows))
    names = list(dict.fromkeys(r["representation"] for r in rows))
    cell = {(r["representation"], r["probe"]): f"{r['accuracy']:.3f}" for r in rows}
    return _grid("label-free", names, probes, cell, 13)


def compare(result: dict[str, Any], probe: str, first: str, second: str) -> str:
    """One line per attribute: ``probe`` accuracy (%) of two representations and the difference."""
    lookup = {(r["representation"], r["attribute"]): r["accuracy"] for r in result["rows"] if r["probe"] == probe}
    attributes = list(dict.fromkeys(a for _, a in lookup))
    lines = [f"{probe}: {first} -> {second}"]
    for attribute in attributes:
        if (first, attribute) in lookup and (second, attribute) in lookup:
            a, b = 100 * lookup[(first, attribute)], 100 * lookup[(second, attribute)]
            lines.append(f"  {attribute:<10} {a:6.1f} -> {b:6.1f}  ({b - a:+.1f})")
    return "\n".join(lines)
