"""Bad photos at the pipeline level: every one gets a clear Eye2FaceError, none a traceback from PIL or OpenCV.

The real face is skimage's astronaut; each test also shows that the same photo, made well, is detected.
"""

from __future__ import annotations

import io
import struct
import zlib

import cv2
import numpy as np
import pytest
from PIL import Image

from eye2face_hub import InvalidImageError, NoFaceError
from eye2face_hub.pipeline import MAX_DETECT_SIDE, MAX_INPUT_PIXELS, load_photo

T = Image.Transpose
# EXIF orientation -> how the camera stored the upright picture (the inverse of what a viewer applies).
STORED_AS = {2: T.FLIP_LEFT_RIGHT, 3: T.ROTATE_180, 4: T.FLIP_TOP_BOTTOM, 5: T.TRANSPOSE, 6: T.ROTATE_90,
             7: T.TRANSVERSE, 8: T.ROTATE_270}


@pytest.fixture(scope="module")
def upright_box(pipe, astronaut):
    return pipe(astronaut).face_box


def encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **kwargs)
    return buf.getvalue()


def close_box(a, b, tol=6) -> bool:
    return all(abs(x - y) <= tol for x, y in zip(a, b))


def png_header_only(width: int, height: int, mode_bytes=(8, 2)) -> bytes:
    """A PNG that claims width x height (8-bit RGB) but holds one tiny IDAT: a decompression-bomb shaped file."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, *mode_bytes, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 1000)) + chunk(b"IEND", b"")


# ------------------------------------------------------------------------------------------ files that are not photos


def test_non_image_file(pipe, tmp_path):
    path = tmp_path / "notes.jpg"
    path.write_text("name,age\nalice,31\n" * 50)
    with pytest.raises(InvalidImageError, match="could not be read as an image: it is not a JPEG, PNG"):
        pipe(str(path))
    eps = tmp_path / "page.eps"  # a real format Pillow knows, but one that would run Ghostscript: not accepted
    eps.write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 64 64\nshowpage\n")
    with pytest.raises(InvalidImageError, match="not a JPEG, PNG"):
        pipe(str(eps))


def test_truncated_jpeg(pipe, astronaut, upright_box):
    data = encode(Image.fromarray(astronaut), "JPEG", quality=95)
    assert close_box(pipe(data).face_box, upright_box)  # the whole file is fine
    for cut in (len(data) // 2, 2000, 200):
        with pytest.raises(InvalidImageError, match="damaged or incomplete|could not be read"):
            pipe(data[:cut])


def test_empty_file(pipe, tmp_path):
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    with pytest.raises(InvalidImageError, match=r"empty.jpg is empty \(0 bytes\)"):
        pipe(str(empty))
    with pytest.raises(InvalidImageError, match=r"empty \(0 bytes\)"):
        pipe(b"")
    with pytest.raises(InvalidImageError, match="no photo was given"):
        pipe(None)
    with pytest.raises(TypeError, match="a photo is a path, bytes, a file object"):  # a program's mistake
        pipe(42)


def test_missing_file_and_folder(pipe, tmp_path):
    with pytest.raises(InvalidImageError, match="no such file"):
        pipe(str(tmp_path / "gone.jpg"))
    with pytest.raises(InvalidImageError, match="is a folder"):
        pipe(str(tmp_path))


def test_tiny_images(pipe):
    for size in ((1, 1), (31, 400), (400, 8)):
        with pytest.raises(InvalidImageError, match=rf"{size[0]}x{size[1]} pixels; a face needs far more"):
            pipe(encode(Image.new("RGB", size, "white"), "PNG"))
    with pytest.raises(InvalidImageError, match="a face needs far more"):
        pipe(np.zeros((1, 1, 3), np.uint8))


def test_bad_arrays(pipe, astronaut):
    with pytest.raises(InvalidImageError, match="uint8"):
        pipe(astronaut.astype(np.float64) / 255)
    with pytest.raises(InvalidImageError, match="HxW"):
        pipe(np.zeros((64, 64, 2), np.uint8))
    with pytest.raises(InvalidImageError, match="HxW"):
        pipe(np.zeros((4, 64, 64, 3), np.uint8))
    gray = np.asarray(Image.fromarray(astronaut).convert("L"))
    assert pipe(gray[..., None]).face_box == pipe(gray).face_box  # HxWx1 is grayscale


# -------------------------------------------------------------------------------------------- huge images and bombs


def test_huge_image_is_refused_before_decoding(pipe, tmp_path):
    # 10000x10000 as a real file (100 megapixels). Refused from the header: decoding it would need 300 MB.
    big = tmp_path / "big.png"
    Image.new("1", (10_000, 10_000)).save(big)
    with pytest.raises(InvalidImageError, match=r"10000x10000 pixels \(100 megapixels\); images over 64 megapixels"):
        pipe(str(big))
    # The same size with almost no pixel data: were it decoded, the answer would be "damaged or incomplete".
    with pytest.raises(InvalidImageError, match="10000x10000 pixels"):
        pipe(png_header_only(10_000, 10_000))
    # Just over the limit, and far over Pillow's own decompression-bomb limit: both refused, clearly.
    with pytest.raises(InvalidImageError, match="megapixels are refused"):
        pipe(png_header_only(8001, 8000))
    with pytest.raises(InvalidImageError, match="far too large|megapixels"):
        pipe(png_header_only(60_000, 60_000))
    # Under the limit, a header-only file is decoded and found damaged: the refusal above is the size check.
    with pytest.raises(InvalidImageError, match="damaged or incomplete"):
        pipe(png_header_only(2000, 2000))
    assert 8001 * 8000 > MAX_INPUT_PIXELS >= 2000 * 2000


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
@pytest.mark.parametrize("scale", [3, 4])
def test_large_photo_is_downscaled_before_detection(pipe, astronaut, upright_box, fmt, scale):
    # 1536 and 2048 px: JPEG decodes at reduced size (draft), PNG is shrunk in Pillow before the array copy.
    big = cv2.resize(astronaut, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC)
    result = pipe(encode(Image.fromarray(big), fmt))
    assert max(result.photo.shape[:2]) == MAX_DETECT_SIDE
    factor = MAX_DETECT_SIDE / astronaut.shape[0]
    expected = [v * factor for v in upright_box]
    assert close_box(result.face_box, expected, tol=6 * factor), (result.face_box, expected)


# --------------------------------------------------------------------------------------------------- odd image modes


def test_16bit_png(pipe, astronaut, upright_box):
    gray8 = np.asarray(Image.fromarray(astronaut).convert("L"))
    gray16 = gray8.astype(np.uint16) * 257  # full 16-bit range
    data = encode(Image.fromarray(gray16), "PNG")
    assert Image.open(io.BytesIO(data)).mode.startswith("I")
    rgb = load_photo(data)
    assert rgb.dtype == np.uint8 and rgb.shape == astronaut.shape
    # Rescaled to 8 bits, not clipped: the same picture as the 8-bit grayscale one.
    assert np.abs(rgb[..., 0].astype(int) - gray8).max() <= 1
    assert close_box(pipe(data).face_box, upright_box)
    dark = encode(Image.fromarray((gray8.astype(np.uint16) * 4)), "PNG")  # 10-bit data in a 16-bit file
    assert close_box(pipe(dark).face_box, upright_box)


def test_grayscale(pipe, astronaut, upright_box):
    for mode in ("L", "1"):
        image = Image.fromarray(astronaut).convert(mode)
        rgb = load_photo(encode(image, "PNG"))
        assert rgb.shape == astronaut.shape and (rgb[..., 0] == rgb[..., 2]).all()
    assert close_box(pipe(encode(Image.fromarray(astronaut).convert("L"), "PNG")).face_box, upright_box)


def test_rgba_is_put_on_white(pipe, astronaut, upright_box):
    alpha = np.zeros(astronaut.shape[:2], np.uint8)
    alpha[:, 100:400] = 255  # the face is opaque, the sides fully transparent
    rgba = np.dstack([astronaut, alpha])
    rgb = load_photo(encode(Image.fromarray(rgba, "RGBA"), "PNG"))
    assert (rgb[:, :100] == 255).all() and (rgb[:, 100:400] == astronaut[:, 100:400]).all()
    assert close_box(pipe(Image.fromarray(rgba, "RGBA")).face_box, upright_box)
    palette = Image.fromarray(astronaut).convert("P", palette=Image.Palette.ADAPTIVE)
    palette.info["transparency"] = 0
    assert close_box(pipe(encode(palette, "PNG")).face_box, upright_box, tol=10)


def test_cmyk_jpeg(pipe, astronaut, upright_box):
    data = encode(Image.fromarray(astronaut).convert("CMYK"), "JPEG", quality=95)
    assert Image.open(io.BytesIO(data)).mode == "CMYK"
    rgb = load_photo(data)
    assert np.abs(rgb.astype(int) - astronaut).mean() < 8  # colours right, not inverted
    assert close_box(pipe(data).face_box, upright_box)


# ----------------------------------------------------------------------------------------------------------- EXIF


@pytest.mark.parametrize("orientation", sorted(STORED_AS))
def test_exif_rotated_jpeg_is_detected_like_the_upright_one(pipe, astronaut, upright_box, orientation):
    stored = Image.fromarray(astronaut).transpose(STORED_AS[orientation])
    exif = Image.Exif()
    exif[0x0112] = orientation
    result = pipe(encode(stored, "JPEG", quality=95, exif=exif))
    assert result.photo.shape == astronaut.shape
    assert close_box(result.face_box, upright_box), (result.face_box, upright_box)
    assert [e.side for e in result.eyes] == ["left", "right"]
    if orientation in (3, 5, 6, 7, 8):  # without the EXIF tag the same pixels show no upright face
        with pytest.raises(NoFaceError):
            pipe(np.asarray(stored))


@pytest.mark.parametrize("fmt", ["PNG", "WEBP", "TIFF"])
def test_exif_rotation_in_other_formats(pipe, astronaut, upright_box, fmt):
    stored = Image.fromarray(astronaut).transpose(STORED_AS[6])
    if fmt == "TIFF":
        data = encode(stored, fmt, tiffinfo={0x0112: 6})
    else:
        exif = Image.Exif()
        exif[0x0112] = 6
        data = encode(stored, fmt, exif=exif)
    assert close_box(pipe(data).face_box, upright_box)


def test_exif_rotation_of_a_large_photo(pipe, astronaut, upright_box):
    big = cv2.resize(astronaut, None, fx=4, fy=4, interpolation=cv2.INTER_CUBIC)  # decoded with draft
    exif = Image.Exif()
    exif[0x0112] = 8
    result = pipe(encode(Image.fromarray(big).transpose(STORED_AS[8]), "JPEG", exif=exif))
    expected = [v * 2 for v in upright_box]  # 2048 -> 1024 for detection: astronaut coordinates x 2
    assert close_box(result.face_box, expected, tol=12), (result.face_box, expected)


# ------------------------------------------------------------------------------------------------ faces: none, several


def test_no_face(pipe):
    from skimage import data

    for photo in (data.coffee(), data.chelsea(), np.full((400, 400, 3), 128, np.uint8)):
        with pytest.raises(NoFaceError, match="no face was found: use a well-lit, frontal photo"):
            pipe(encode(Image.fromarray(photo), "JPEG"))


@pytest.mark.parametrize("large_on_the_left", [True, False])
def test_several_faces_use_the_largest_and_say_so(pipe, astronaut, upright_box, large_on_the_left):
    small = cv2.resize(astronaut, None, fx=0.7, fy=0.7, interpolation=cv2.INTER_AREA)
    canvas = np.full((512, 512 + 16 + small.shape[1], 3), 255, np.uint8)
    if large_on_the_left:
        canvas[:, :512] = astronaut
        canvas[: small.shape[0], 528:] = small
        offset = 0
    else:
        canvas[: small.shape[0], : small.shape[1]] = small
        canvas[:, small.shape[1] + 16 :] = astronaut
        offset = small.shape[1] + 16
    result = pipe(encode(Image.fromarray(canvas), "PNG"))
    assert any("faces were found; the largest one is used" in n for n in result.notes), result.notes
    x, y, w, h = upright_box
    assert close_box(result.face_box, (x + offset, y, w, h)), (result.face_box, upright_box, offset)
    assert all(result.face_box[0] <= e.box[0] < result.face_box[0] + result.face_box[2] for e in result.eyes)
    single = pipe(astronaut)
    assert not any("faces were found" in n for n in single.notes)  # said only when there are several
