"""The comparator's report: its fields (DESIGN.md "mdcompare FEED"), built once here, and its
text form. ``--format json`` prints `build`'s object; ``--out DIR`` writes it as report.json.

Top level (fixed by DESIGN.md, then extensions):

=====================  ===========================================================================
field                  meaning
=====================  ===========================================================================
feed, venue            the feed under test and its venue
started_ns, ended_ns   the comparison's start and end (host clock)
overlap_ns             [from, to]: from the first moment both sides had records, to the end less
                       the grace window
streams                per stream: the `STREAM_FIELDS` below
latency_us             ring_minus_reference, exchange_to_ring, exchange_to_reference,
                       receive_to_commit: each ``{"n", "p50", "p90", "p99", "p999", "max"}`` (µs)
reference_gaps         the reference's own gaps: ``{"kind": "disconnect", "url", "from_ns",
                       "to_ns", "reason"}`` and ``{"kind": "sequence", "stream", "symbol",
                       "from_id", "to_id", "ts_recv"}`` (holes in its id sequence)
against                the reference feed with ``--against`` (null with a live reference)
reference              the live reference: ``{"url", "connections", "connects", "messages",
                       "unparsed"}`` (null with ``--against``)
ring                   the ring side: ``{"records", "reader_lost": {stream: n},
                       "events": {kind: n}}`` (the writer's events seen during the run)
grace_s                the grace window
ok                     nothing missing, mismatched or duplicated (the exit code is 0)
=====================  ===========================================================================
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from consolidator.compare.matcher import Matcher, StreamCounts

__all__ = ["LATENCIES", "STREAM_FIELDS", "build", "summary_line", "text"]

STREAM_FIELDS: Final = (
    ("reference", "records of the reference in the overlap"),
    ("ring", "records of the ring in the overlap"),
    ("matched", "in both, every compared value and ts_event equal"),
    ("missing", "the reference saw it, the ring never had it"),
    ("extra", "the ring has it inside the overlap, the reference never saw it"),
    ("mismatched", "in both, some value differs (mismatches: the first 100 differences)"),
    ("duplicates", "the ring has the id more than once"),
    ("missing_ids", "[[symbol, id], ...] (at most 10,000)"),
    ("extra_ids", "[[symbol, id], ...]"),
    ("mismatched_ids", "[[symbol, id], ...]"),
    ("duplicate_ids", "[[symbol, id], ...]"),
    ("mismatches", "[{symbol, id, fields: {name: {reference, ring}}}, ...]"),
    ("resynced", "depth diffs the ring replaced by a snapshot after a resync (not a failure)"),
    ("not_seen_by_reference", "ring records inside a gap of the reference (not a failure)"),
    ("late", "classified missing or extra, then the counterpart came after all"),
    ("in_flight", "younger than the grace window at the end: not judged"),
    ("before_overlap", "before the overlap's start: not judged"),
    ("unchecked", "the comparator itself was lapped there: not judged"),
    ("reference_duplicates", "the reference received the id more than once"),
)
"""The fields of each ``streams`` entry, in order, with their meaning."""

LATENCIES: Final = (
    ("ring_minus_reference", "ring ts_recv minus the reference's receive time"),
    ("exchange_to_ring", "ring ts_recv minus ts_event"),
    ("exchange_to_reference", "reference receive time minus ts_event"),
    ("receive_to_commit", "ring ts_commit minus ts_recv"),
)


def _stream(counts: StreamCounts) -> dict[str, Any]:
    return {name: getattr(counts, name) for name, _ in STREAM_FIELDS}


def build(
    matcher: Matcher,
    *,
    feed: str,
    venue: str,
    started_ns: int,
    ended_ns: int,
    overlap_ns: tuple[int | None, int],
    against: str | None,
    reference: Mapping[str, Any] | None,
    ring: Mapping[str, Any],
) -> dict[str, Any]:
    """The report object (see the module docstring)."""
    return {
        "feed": feed,
        "venue": venue,
        "started_ns": started_ns,
        "ended_ns": ended_ns,
        "overlap_ns": list(overlap_ns),
        "streams": {stream: _stream(c) for stream, c in matcher.counts.items()},
        "latency_us": {name: getattr(matcher, name).quantiles_us() for name, _ in LATENCIES},
        "reference_gaps": list(matcher.reference_gaps),
        "against": against,
        "reference": None if reference is None else dict(reference),
        "ring": dict(ring),
        "grace_s": matcher.grace_ns / 1e9,
        "ok": not matcher.failed(),
    }


def summary_line(matcher: Matcher, elapsed_s: float) -> str:
    """One line of the live summary."""
    parts = [f"{elapsed_s:7.1f}s"]
    for stream, c in matcher.counts.items():
        part = f"{stream} {c.matched}"
        bad = [
            f"{label}{n}"
            for label, n in (
                ("-", c.missing),
                ("+", c.extra),
                ("~", c.mismatched),
                ("x", c.duplicates),
            )  # fmt: skip
            if n
        ]
        parts.append(part + (f" ({' '.join(bad)})" if bad else " ok"))
    q = matcher.ring_minus_reference.quantiles_us()
    if q["n"]:
        parts.append(f"ring-ref p50 {q['p50']}us p99 {q['p99']}us")
    parts.append(f"pending {matcher.pending()}")
    if matcher.reference_gaps:
        parts.append(f"reference gaps {len(matcher.reference_gaps)}")
    return "  ".join(parts)


def _ids(ids: list[list[Any]], limit: int = 20) -> str:
    shown = ", ".join(f"{s}:{i}" for s, i in ids[:limit])
    return shown + (f", ... ({len(ids)} listed)" if len(ids) > limit else "")


def text(report: Mapping[str, Any]) -> str:
    """The report for a person."""
    lines = [
        f"mdcompare {report['feed']} ({report['venue']})"
        + (f" against {report['against']}" if report["against"] else " against a live reference"),
        f"overlap {_span(report['overlap_ns'])}, grace {report['grace_s']:g} s",
    ]
    header = ("stream", "reference", "ring", "matched", "missing", "extra", "mismatched",
              "duplicates", "resynced", "unseen")  # fmt: skip
    lines.append("  ".join(f"{h:>10}" for h in header))
    for stream, s in report["streams"].items():
        names = ("reference", "ring", "matched", "missing", "extra", "mismatched", "duplicates",
                 "resynced", "not_seen_by_reference")  # fmt: skip
        row = (stream, *(s[name] for name in names))
        lines.append("  ".join(f"{v:>10}" for v in row))
    for stream, s in report["streams"].items():
        for name in ("missing_ids", "extra_ids", "mismatched_ids", "duplicate_ids"):
            if s[name]:
                lines.append(f"{stream} {name.removesuffix('_ids')}: {_ids(s[name])}")
        for diff in s["mismatches"][:5]:
            fields = "; ".join(
                f"{k} ref={v['reference']} ring={v['ring']}" for k, v in diff["fields"].items()
            )
            lines.append(f"{stream} {diff['symbol']}:{diff['id']} differs: {fields}")
    lines.append(
        "latency (us)             n        p50        p90        p99      p99.9        max"
    )
    for name, _ in LATENCIES:
        q = report["latency_us"][name]
        values = [q[k] for k in ("p50", "p90", "p99", "p999", "max")]
        cells = "".join(f"{'-' if v is None else v:>11}" for v in values)
        lines.append(f"{name:<22}{q['n']:>8}{cells}")
    for gap in report["reference_gaps"]:
        if gap["kind"] == "disconnect":
            lines.append(
                f"reference gap: {gap['url']} disconnected ({gap['reason']}) "
                f"{_span([gap['from_ns'], gap['to_ns']])}"
            )
        else:
            lines.append(
                f"reference gap: {gap['stream']} {gap['symbol']} ids {gap['from_id']}..."
                f"{gap['to_id']} never received"
            )
    lost = {k: v for k, v in report["ring"].get("reader_lost", {}).items() if v}
    if lost:
        lines.append(f"comparator lapped (records not judged): {lost}")
    lines.append("OK: nothing missing, mismatched or duplicated" if report["ok"] else "FAILED")
    return "\n".join(lines)


def _span(span: list[int | None]) -> str:
    lo, hi = span
    if lo is None:
        return "none"
    if hi is None:
        return f"from {lo} (not closed)"
    return f"{(hi - lo) / 1e9:.3f} s"
