import numpy as np
import pytest
from PIL import Image

from eye2face_hub import InvalidImageError, NoFaceError
from eye2face_hub.pipeline import load_photo


def test_photo_to_faces(pipe, astronaut_jpg, astronaut):
    result = pipe(str(astronaut_jpg))
    assert [r.side for r in result.eyes] == ["left", "right"]
    assert result.real_face.shape == (128, 128, 3)
    for r in result.eyes:
        assert r.eye.shape == (32, 32, 3) and r.eye.dtype == np.uint8
        assert set(r.faces) == {"a", "b"} and all(f.shape == (128, 128, 3) for f in r.faces.values())
    annotated = result.annotated()
    assert annotated.shape == astronaut.shape and (annotated != astronaut).any()
    only_right = pipe(Image.open(astronaut_jpg), eyes="right")
    assert [r.side for r in only_right.eyes] == ["right"]
    assert only_right.eyes[0].box == result.eyes[1].box


def test_eye_crop_to_face(pipe, astronaut):
    faces = pipe.generate([astronaut[200:240, 180:220]])  # any size is resized to 32x32
    assert faces["a"][0].shape == (128, 128, 3)


def test_any_mode_photo(pipe, astronaut):
    for image in (Image.fromarray(astronaut).convert("L"), Image.fromarray(astronaut).convert("RGBA")):
        assert load_photo(image).shape == astronaut.shape
        assert len(pipe(image).eyes) >= 1


def test_bad_inputs_are_clear(pipe, tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"this is not an image")
    with pytest.raises(InvalidImageError, match="could not be read as an image"):
        pipe(str(broken))
    with pytest.raises(NoFaceError, match="no face"):
        pipe(np.full((300, 300, 3), 200, np.uint8))
    with pytest.raises(ValueError, match="eyes must be"):
        pipe(np.full((300, 300, 3), 200, np.uint8), eyes="middle")


def test_an_eye_box_that_holds_no_eye_is_refused(pipe, astronaut, monkeypatch):
    from eye2face_hub import pipeline
    from eye2face_hub.data import detect

    real = detect(astronaut)
    assert len(real.eyes) == 2 and pipe(astronaut).eyes  # the real eye boxes pass the landmark check
    (fx, fy, fw, fh) = real.face
    mouth = (fx + fw // 3, fy + fh * 3 // 4, fw // 4, fh // 8)  # an "eye" where the mouth is
    monkeypatch.setattr(pipeline, "detect", lambda rgb: type(real)(real.faces, [real.eyes[0], mouth]))
    with pytest.raises(pipeline.NoEyeError, match="not an eye"):
        pipe(astronaut)
