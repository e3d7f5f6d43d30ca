"""The records of a results file that a report counts.

A disturbed repeat is measured again (`--remeasure`, 2 by default on these noisy hosts): the first attempt
stays in the file naming its replacement in `superseded_by`, so a sweep's record count is only known once
those are left out.
"""

from __future__ import annotations


def standing(document: dict) -> list[dict]:
    return [r for r in document["records"] if r["superseded_by"] is None]
