"""Age bands of photos whose file names carry the age, as UTKFace's do: `AGE_GENDER_RACE_DATETIME.jpg.chip.jpg`."""

from __future__ import annotations

import os
import re

# (name, lowest age, highest age or None): children, adults, older people.
AGE_BANDS = (("0-12", 0, 12), ("13-59", 13, 59), ("60+", 60, None))
UNKNOWN = "unknown"  # a photo whose name carries no age (CelebA's, or a UTKFace name missing its fields)
# The age field, then gender and race (either may be missing), then the date-time digits.
_UTKFACE_NAME = re.compile(r"(\d{1,3})_(?:\d_)?(?:\d_)?\d{8,}")


def age_from_name(name: str) -> int | None:
    """The age in a UTKFace file name (the first field), or None when the name does not have UTKFace's fields."""
    match = _UTKFACE_NAME.match(os.path.basename(name))
    return int(match.group(1)) if match else None


def age_band(age: int | None) -> str:
    """The band of an age: "0-12", "13-59", "60+", or "unknown"."""
    if age is None:
        return UNKNOWN
    for band, low, high in AGE_BANDS:
        if age >= low and (high is None or age <= high):
            return band
    raise ValueError(f"an age is at least 0, got {age}")


def band_of(name: str) -> str:
    """The age band of a photo from its file name."""
    return age_band(age_from_name(name))


def band_order(bands) -> list[str]:
    """The bands present, youngest first, unknown last."""
    order = [band for band, _, _ in AGE_BANDS] + [UNKNOWN]
    return sorted(set(bands), key=order.index)


def band_counts(names) -> dict[str, int]:
    """Photos per age band, youngest first, from their file names; {} when no name carries an age (CelebA's)."""
    bands = [band_of(name) for name in names]
    return {band: bands.count(band) for band in band_order(bands)} if set(bands) - {UNKNOWN} else {}
