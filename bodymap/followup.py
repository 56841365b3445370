"""A patient's visits as one series: each lesion keeps one persistent id across all visits.

    series = track_series(visits, reviews=[...])      # visits in date order (bodymap.track.Visit)
    series.ids[k]        # {lesion id at visit k -> persistent id}
    series.status[k]     # {lesion id at visit k -> 'untracked' | 'new' | 'grown' | 'changed' | 'stable'}
    series.history(pid)  # [(visit index, lesion id), ...] where the lesion was seen

Tracking is chained visit to visit: visit k is tracked against visit k - 1 with the pairwise
``bodymap.pipeline.track_visits`` (which respects that link's reviews file). A lesion of visit k
paired with a lesion of visit k - 1 takes its persistent id; a lesion without a partner is new
at visit k and gets the next unused id. A lesion missed at one visit and seen again later is
therefore a new lesion when it comes back (a chain has no memory beyond the previous visit).

``chain_ids`` does the numbering alone, from tracking results already made (the batch runner
reads them from tracking.json files); it uses only the public face of bodymap.track.Tracking
(pairs, new, missing, partner()).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable, Sequence

from bodymap.records import Status, change_word

Progress = Callable[[str, float], None]


@dataclasses.dataclass
class Series:
    """Persistent lesion ids of one patient's visits (in date order).

    ids: per visit, {lesion id -> persistent id} (persistent ids count from 1 in order of first
    sighting; at the first visit in lesion-id order); status: per visit, {lesion id -> one word}
    ('untracked' at the first visit and after a link that was not tracked; then 'new',
    'grown', 'changed' (colour flagged) or 'stable'); previous: per visit, {lesion id -> partner's lesion id at the visit before}
    (matched lesions only); trackings: link k (k = 1..n-1) is trackings[k - 1], visit k against
    visit k - 1 (bodymap.track.Tracking, or None where the link was not tracked)."""

    ids: list[dict[int, int]]
    status: list[dict[int, str]]
    previous: list[dict[int, int]]
    trackings: list

    @property
    def n_persistent(self) -> int:
        """How many distinct lesions the series holds."""
        return max((p for d in self.ids for p in d.values()), default=0)

    def history(self, pid: int) -> list[tuple[int, int]]:
        """[(visit index, lesion id)] of persistent lesion pid, in visit order."""
        return [(k, i) for k, d in enumerate(self.ids) for i, p in d.items() if p == pid]


def chain_ids(lesion_ids: Sequence[Sequence[int]], trackings: Sequence) -> Series:
    """Persistent ids from pairwise tracking results.

    lesion_ids: per visit (date order) the lesion ids of that visit; trackings: n - 1 results,
    trackings[k - 1] tracks visit k (as visit 2) against visit k - 1 (as visit 1); an entry may
    be None (a link that could not be tracked: every lesion of visit k then gets a new id, with
    status 'untracked'). Returns a Series."""
    n = len(lesion_ids)
    if len(trackings) != max(n - 1, 0):
        raise ValueError(f"chain_ids: {n} visits need {max(n - 1, 0)} trackings, got {len(trackings)}")
    ids: list[dict[int, int]] = []
    status: list[dict[int, str]] = []
    previous: list[dict[int, int]] = []
    next_id = 1
    for k, lids in enumerate(lesion_ids):
        tr = trackings[k - 1] if k else None
        partner = tr.partner() if tr is not None else {}
        flags = {int(p.id2): p.flags for p in tr.pairs} if tr is not None else {}
        cur, st, prev = {}, {}, {}
        for i in sorted(int(x) for x in lids):
            j = partner.get(i)
            if j is not None and int(j) in ids[k - 1]:
                cur[i], prev[i] = ids[k - 1][int(j)], int(j)
                st[i] = change_word(flags.get(i, []))
            else:
                cur[i], next_id = next_id, next_id + 1
                st[i] = Status.NEW.value if tr is not None else "untracked"
        ids.append(cur)
        status.append(st)
        previous.append(prev)
    return Series(ids, status, previous, list(trackings))


def track_series(visits: Sequence, reviews: Sequence[str | Path | None] | None = None,
                 progress: Progress | None = None, **options) -> Series:
    """Track a patient's visits in date order and number their lesions persistently.

    visits: bodymap.track.Visit list (each with its lesions; see bodymap.pipeline.load_visit),
    oldest first; reviews: per link (n - 1 entries) a reviews file (bodymap.track.Reviews JSON,
    e.g. the tracking folder's reviews.json) or None; options: bodymap.track.TrackOptions
    fields. progress(stage, fraction) over the whole series. Returns a Series."""
    from bodymap.pipeline import track_visits

    links = max(len(visits) - 1, 0)
    reviews = list(reviews) if reviews is not None else [None] * links
    if len(reviews) != links:
        raise ValueError(f"track_series: {len(visits)} visits have {links} links, got {len(reviews)} reviews files")
    trackings = []
    for k in range(1, len(visits)):
        sub = (lambda s, f, k=k: progress(f"visit {k + 1}: {s}", (k - 1 + f) / links)) if progress else None
        trackings.append(track_visits(visits[k - 1], visits[k], reviews=reviews[k - 1], progress=sub, **options))
    return chain_ids([[l.id for l in v.lesions.lesions] for v in visits], trackings)
