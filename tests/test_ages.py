"""Age bands from UTKFace file names."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from eye2face_hub.ages import AGE_BANDS, UNKNOWN, age_band, age_from_name, band_of, band_order


@given(age=st.integers(0, 116), gender=st.sampled_from(["0_", "1_", ""]), race=st.sampled_from(["0_", "4_", ""]),
       stamp=st.integers(10**16, 10**17 - 1))
def test_age_is_read_from_utkface_names(age, gender, race, stamp):
    name = f"{age}_{gender}{race}{stamp}.jpg.chip.jpg"  # a missing gender or race field leaves the age readable
    assert age_from_name(name) == age and age_from_name(f"/some/folder/{name}") == age
    band = band_of(name)
    low, high = next((lo, hi) for b, lo, hi in AGE_BANDS if b == band)
    assert low <= age and (high is None or age <= high)


@pytest.mark.parametrize("name", ["05000.jpg", "astronaut.jpg", "2_eyes.png", "12_holiday_photo.jpg", ""])
def test_names_without_an_age_are_unknown(name):
    assert age_from_name(name) is None and band_of(name) == UNKNOWN


def test_band_edges_and_order():
    assert [age_band(a) for a in (0, 12, 13, 59, 60, 116, None)] == ["0-12", "0-12", "13-59", "13-59", "60+", "60+", UNKNOWN]
    assert band_order(["60+", UNKNOWN, "0-12", "60+", "13-59"]) == ["0-12", "13-59", "60+", UNKNOWN]
    with pytest.raises(ValueError, match="at least 0"):
        age_band(-1)
