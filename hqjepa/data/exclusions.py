"""The archive's own exclusions: published lists of patches to leave out, and reBEN's quality flags.

BigEarthNet v1.0 publishes `patches_with_seasonal_snow.csv` and `patches_with_cloud_and_shadow.csv`,
one S2 patch name per line; reBEN (v2.0) flags the same patches in its metadata with the boolean
columns `contains_seasonal_snow` and `contains_cloud_or_shadow` (the released archive lists them
in `metadata_for_patches_with_snow_cloud_or_shadow.parquet` beside `metadata.parquet`).

    lists = [read_exclude_list(p) for p in paths]                  # ExcludeListError on a bad file
    result = apply_exclusions(scan, lists, exclude_flagged=True)  # kept pairs, excluded records

A list is plain text: one patch name per line (S2 v1.0 names, reBEN S2 patch ids or S1 names),
optionally a CSV whose first field is the name, blank lines and `#` comments ignored, one header
line tolerated. A pair is excluded when a list names its S2 patch id, its S1 name or (reBEN) its
v1.0 S2 name, or, with `exclude_flagged`, when either flag is set. Nothing is dropped silently:
every excluded pair becomes a record with its reason (`_excluded.jsonl`), and names that match no
pair of the archive are counted per list so that a list for another archive version shows up.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from hqjepa.data.bigearthnet import ArchiveScan, PairRecord

EXCLUDED = "_excluded.jsonl"
# S2 v1.0 'S2A_MSIL2A_20170613T101031_0_45', reBEN 'S2A_MSIL2A_20170613T101031_N9999_R022_T33UUP_26_57',
# S1 'S1A_IW_GRDH_1SDV_20170613T165043_33UUP_61_39': a Sentinel prefix, word characters, two grid numbers
PATCH_NAME = re.compile(r"^S[12][A-D]_\w+_\d+_\d+$")
_HEADER = re.compile(r"^[A-Za-z_][A-Za-z0-9_ ,;\t\"']*$")


class ExcludeListError(ValueError):
    """An exclude list that cannot be read as patch names; the message names the file and line."""


@dataclass(frozen=True)
class ExcludeList:
    """The patch names of one exclude-list file."""

    path: str
    names: frozenset[str]

    @property
    def label(self) -> str:
        """The file's name, as excluded records cite it."""
        return Path(self.path).name


@dataclass
class ListUse:
    """How one list matched the archive: names it holds, pairs it excluded, names it matched nowhere."""

    path: str
    names: int
    excluded: int
    unknown: list[str]


@dataclass
class ExclusionResult:
    """Pairs kept, excluded pairs as records ({patch_id, s1_patch_id, reason, source}) and per-list use."""

    pairs: list[PairRecord]
    excluded: list[dict] = field(default_factory=list)
    lists: list[ListUse] = field(default_factory=list)
    flagged: bool = False

    def summary(self) -> dict:
        """What the manifest records: settings, counts by source and each list's unknown names."""
        by_source: dict[str, int] = {}
        for rec in self.excluded:
            for src in rec["source"].split("; "):
                by_source[src] = by_source.get(src, 0) + 1
        return {
            "exclude_flagged": self.flagged,
            "exclude_lists": [
                {"path": u.path, "names": u.names, "excluded": u.excluded, "unknown": len(u.unknown)}
                for u in self.lists
            ],
            "excluded_by_source": dict(sorted(by_source.items())),
        }


def read_exclude_list(path: str | Path) -> ExcludeList:
    """Read one list file; ExcludeListError (one line, file and line number) when it is not a list."""
    p = Path(path)
    if not p.is_file():
        raise ExcludeListError(f"exclude list {p}: no such file")
    try:
        text = p.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise ExcludeListError(f"exclude list {p}: not a text file (not UTF-8)") from None
    except OSError as e:
        raise ExcludeListError(f"exclude list {p}: unreadable ({e.strerror or e})") from None
    names: set[str] = set()
    first = True
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        name = line.split(",")[0].strip().strip("\"'")
        if PATCH_NAME.match(name):
            names.add(name)
        elif not (first and _HEADER.match(line)):  # a header such as 'patch_id' or 'name,split'
            shown = raw.strip() if len(raw.strip()) <= 60 else raw.strip()[:57] + "..."
            raise ExcludeListError(f"exclude list {p}, line {number}: {shown!r} is not a BigEarthNet patch name")
        first = False
    if not names:
        raise ExcludeListError(f"exclude list {p}: holds no patch names")
    return ExcludeList(path=str(p), names=frozenset(names))


def pair_names(rec: PairRecord) -> tuple[str, ...]:
    """Every name a list may use for a pair: S2 patch id, S1 name, reBEN's v1.0 S2 name."""
    return tuple(n for n in (rec.patch_id, rec.s1_patch_id, rec.s2v1_name) if n)


def apply_exclusions(
    scan: ArchiveScan, lists: Sequence[ExcludeList] = (), exclude_flagged: bool = False
) -> ExclusionResult:
    """Split the scan's pairs into kept and excluded; count each list's names that match nothing.

    Names that match a pair the scan could not form (`scan.problems`) are known, not unknown: such
    pairs stay quarantined with their own reason."""
    if exclude_flagged and scan.layout != "v2":
        raise ExcludeListError(
            "--exclude-flagged needs a v2.0 (reBEN) archive, whose metadata flags snow and cloud; for "
            "v1.0 pass its published lists: --exclude-list patches_with_seasonal_snow.csv "
            "--exclude-list patches_with_cloud_and_shadow.csv"
        )
    result = ExclusionResult(pairs=[], flagged=exclude_flagged)
    matched = [set() for _ in lists]
    counts = [0] * len(lists)
    for rec in scan.pairs:
        names = pair_names(rec)
        reasons, sources = [], []
        for i, lst in enumerate(lists):
            hit = [n for n in names if n in lst.names]
            if hit:
                matched[i].update(hit)
                counts[i] += 1
                reasons.append(f"listed in {lst.label}")
                sources.append(lst.label)
        if exclude_flagged:
            for flag in rec.flags:
                reasons.append(f"flagged {flag} in {rec.flags_source or 'metadata'}")
                sources.append(flag)
        if reasons:
            result.excluded.append(
                {
                    "patch_id": rec.patch_id,
                    "s1_patch_id": rec.s1_patch_id,
                    "split": rec.split,
                    "reason": "; ".join(reasons),
                    "source": "; ".join(sources),
                }
            )
        else:
            result.pairs.append(rec)
    problem_names = set(_problem_names(scan.problems))
    for i, lst in enumerate(lists):
        unknown = sorted(lst.names - matched[i] - problem_names)
        result.lists.append(ListUse(path=lst.path, names=len(lst.names), excluded=counts[i], unknown=unknown))
    return result


def _problem_names(problems: Iterable[dict]) -> Iterable[str]:
    for p in problems:
        for key in ("patch_id", "s1_patch_id", "s2v1_name"):
            if p.get(key):
                yield p[key]
