"""Plain-text tables of ``eval.json`` rows (``{representation, attribute, probe, accuracy}``)."""

from __future__ import annotations

from typing import Any


def format_table(result: dict[str, Any], probe: str = "linear") -> str:
    """Accuracy (%) per representation (rows) and attribute (columns) for one probe."""
    rows = [r for r in result["rows"] if r["probe"] == probe]
    attributes = list(dict.fromkeys(r["attribute"] for r in rows))
    names = list(dict.fromkeys(r["representation"] for r in rows))
    lookup = {(r["representation"], r["attribute"]): r["accuracy"] for r in rows}
    width = max([len(n) for n in names] + [14])
    lines = [f"{probe + ' probe':<{width}}  " + "  ".join(f"{a:>8}" for a in attributes)]
    for name in names:
        cells = "  ".join(f"{100 * lookup[(name, a)]:8.1f}" if (name, a) in lookup else f"{'-':>8}"
                          for a in attributes)
        lines.append(f"{name:<{width}}  {cells}")
    return "\n".join(lines)


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
    lookup = {(r["representation"], r["probe"]): r["accuracy"] for r in rows}
    width = max([len(n) for n in names] + [14])
    lines = [f"{'label-free':<{width}}  " + "  ".join(f"{p:>13}" for p in probes)]
    for name in names:
        lines.append(f"{name:<{width}}  " + "  ".join(
            f"{lookup[(name, p)]:13.3f}" if (name, p) in lookup else f"{'-':>13}" for p in probes))
    return "\n".join(lines)


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
