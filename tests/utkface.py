"""UTKFace photos of every age band for the tests, read in place from ../shared (never copied into the project)."""

from pathlib import Path

import pytest

from eye2face_hub.ages import band_of

from .paths import SHARED, need

UTKFACE = SHARED / "data" / "utkface200"


@pytest.fixture(scope="session")
def utkface_sample(tmp_path_factory) -> Path:
    """A temporary folder of links to 60 UTKFace photos spread over the names (every age band)."""
    files = sorted(need(UTKFACE).glob("*.jpg"))
    folder = tmp_path_factory.mktemp("utkface")
    for f in files[:: len(files) // 60][:60]:
        (folder / f.name).symlink_to(f)
    assert {band_of(f.name) for f in folder.iterdir()} == {"0-12", "13-59", "60+"}
    return folder
