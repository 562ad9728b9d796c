"""The data doctor's review list: one entry per flagged photo, worst first, with the decision already taken.

A ``DoctorReport`` lists findings (a photo can have several: a duplicate that is also a label suspect); a
person decides per photo. ``review_items`` groups the findings by photo in the report's order (kind, then
score) and attaches the photo's row of the decisions file, so the Health view of the Data page
(``carclf.ui.health``) can page through it and a test can check it without Streamlit.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Optional, Sequence

from carclf.decisions import Decision
from carclf.doctor import DoctorReport, Finding

# Kinds whose ``other`` names a photo of the ``against`` folder rather than of the dataset itself.
AGAINST_KINDS = frozenset({"leak"})


@dataclass(frozen=True)
class ReviewItem:
    """One flagged photo: its findings (worst first) and the decision recorded for it, if any."""

    path: str  # relative to the dataset root, as in the decisions file
    label: str  # its class when the doctor looked (after the decisions file of that moment)
    findings: tuple[Finding, ...]
    decision: Optional[Decision] = None

    @property
    def kinds(self) -> list[str]:
        return [f.kind for f in self.findings]

    @property
    def suggested_label(self) -> str:
        """The class the data points to ('' when no finding suggests one)."""
        return next((f.suggested_label for f in self.findings if f.suggested_label), "")

    @property
    def pair(self) -> Optional[Finding]:
        """The first finding that names another photo (duplicate, near-duplicate, leak), or None."""
        return next((f for f in self.findings if f.other), None)

    @property
    def reason(self) -> str:
        """One line for the decisions file's ``reason`` column: the kinds and the worst finding's detail
        ('' for a photo without findings, e.g. one opened from the map)."""
        if not self.findings:
            return ""
        worst = self.findings[0]
        kinds = ", ".join(dict.fromkeys(self.kinds))
        return f"{kinds}: {worst.detail}" if worst.detail else kinds


def review_items(report: DoctorReport, decisions: Mapping[str, Decision], kind: Optional[str] = None,
                 undecided_only: bool = False) -> list[ReviewItem]:
    """The flagged photos of ``report``, worst first; ``kind`` keeps those with a finding of that kind.

    ``decisions`` is ``carclf.decisions.load_decisions(report.root)``: read it anew on every page run so a
    click shows at once, without re-running the doctor. ``undecided_only`` leaves decided photos out.
    """
    grouped: dict[str, list[Finding]] = {}
    for finding in report.findings:  # already worst first: kind order, then score
        grouped.setdefault(finding.path, []).append(finding)
    items = []
    for path, findings in grouped.items():
        if kind is not None and all(f.kind != kind for f in findings):
            continue
        decision = decisions.get(path)
        if undecided_only and decision is not None:
            continue
        items.append(ReviewItem(path, findings[0].label, tuple(findings), decision))
    return items


def pair_path(report: DoctorReport, finding: Finding) -> Optional[Path]:
    """The file ``finding.other`` names: in ``report.against`` for a leak, else in the dataset; None if none."""
    if not finding.other:
        return None
    base = report.against if finding.kind in AGAINST_KINDS else report.root
    return Path(base) / finding.other if base is not None else None


def relabel_choices(classes: Sequence[str], item: ReviewItem) -> list[str]:
    """Classes a photo can be moved to: the suggested one first, then the others; never its own class."""
    others = [name for name in classes if name != item.label]
    suggested = item.suggested_label
    if suggested in others:
        others.remove(suggested)
        others.insert(0, suggested)
    return others


def page_bounds(n_items: int, page: int, per_page: int) -> tuple[int, int, int]:
    """(page clamped to 1..n_pages, start, stop) of the items shown on ``page`` (pages count from 1)."""
    page = min(max(1, int(page)), n_pages(n_items, per_page))
    start = (page - 1) * per_page
    return page, start, min(start + per_page, n_items)


def n_pages(n_items: int, per_page: int) -> int:
    """How many pages ``n_items`` fill (at least one)."""
    return max(1, -(-n_items // per_page))


def describe_decision(decision: Decision) -> str:
    """A decision in a few words: "excluded", "relabelled to audi", "kept (reviewed)"."""
    if decision.action == "relabel":
        return f"relabelled to {decision.label}"
    return {"exclude": "excluded", "keep": "kept (reviewed)"}.get(decision.action, decision.action)


__all__ = ["ReviewItem", "review_items", "pair_path", "relabel_choices", "page_bounds", "n_pages",
           "describe_decision"]
