"""The stage tree of a report: each parent's children plus its ``(untracked)`` remainder.

A parent stage's time is its children's plus what ran between them (Python between two stages, a
stage's own set-up): the report states that remainder on the parent (``children_s``, ``untracked_s``)
and every view — the text table, the Markdown, the charts — shows it as an ``(untracked)`` row, so that
the rows of a parent always add up to it.
"""

from __future__ import annotations

from typing import Any

from ..stages import UNTRACKED


def _dur(s: dict[str, Any]) -> float | None:
    d = s.get("duration_s")
    return float(d) if isinstance(d, int | float) and not isinstance(d, bool) else None


def _key(s: dict[str, Any]) -> Any:
    """How children point at their parent: its index when recorded, else its name."""
    return s.get("index") if s.get("index") is not None else s.get("name")


def children_of(stages: list[dict[str, Any]]) -> dict[Any, list[dict[str, Any]]]:
    """Direct children of each stage, by the parent's index (or name in reports without indices)."""
    out: dict[Any, list[dict[str, Any]]] = {}
    for s in stages:
        parent = s.get("parent_index") if s.get("parent_index") is not None else s.get("parent")
        if parent is not None:
            out.setdefault(parent, []).append(s)
    return out


def add_remainders(stages: list[dict[str, Any]], ndigits: int = 6) -> None:
    """Set ``children_s`` and ``untracked_s`` (= duration − children) on every stage that has children."""
    kids = children_of(stages)
    for s in stages:
        ch = kids.get(_key(s))
        dur = _dur(s)
        if not ch or dur is None:
            continue
        total = sum(d for d in (_dur(c) for c in ch) if d is not None)
        s["children_s"] = round(total, ndigits)
        s["untracked_s"] = round(dur - total, ndigits)


def untracked_row(parent: dict[str, Any]) -> dict[str, Any]:
    """The ``(untracked)`` row shown as the parent's last child."""
    return {"name": UNTRACKED, "parent": parent.get("name"), "depth": int(parent.get("depth") or 0) + 1,
            "duration_s": parent.get("untracked_s"), "comment": f"{parent.get('name')} outside its child stages",
            "remainder": True}


def rows_with_remainders(stages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The stages in report order with an ``(untracked)`` row after each parent's last descendant.

    Parents without ``untracked_s`` (reports written before it) get it computed here.
    """
    stages = [dict(s) for s in stages]
    if any("untracked_s" not in s for s in stages):
        add_remainders(stages)
    out: list[dict[str, Any]] = []
    open_parents: list[dict[str, Any]] = []  # parents whose subtree is being emitted, outermost first
    for s in stages:
        depth = int(s.get("depth") or 0)
        while open_parents and int(open_parents[-1].get("depth") or 0) >= depth:
            out.append(untracked_row(open_parents.pop()))
        out.append(s)
        if "untracked_s" in s:
            open_parents.append(s)
    while open_parents:
        out.append(untracked_row(open_parents.pop()))
    return out
