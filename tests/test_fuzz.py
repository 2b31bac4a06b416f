"""Fuzzing the photo path and config.json: random and mutated input never crashes, never hangs.

Only Eye2FaceError (photos) or ModelLoadError (model folders) may come out. Each example runs under an alarm
(HANG_S, far above the ~0.1 s an example takes) so that a hang fails the test instead of stalling CI.
"""

from __future__ import annotations

import io
import json
import signal
import warnings
from contextlib import contextmanager

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image

from eye2face_hub import Eye2FaceError, EyeToFace
from eye2face_hub.hub import ModelLoadError

HANG_S = 30
PHOTO_EXAMPLES = 1000
FUZZ = settings(deadline=None, database=None, print_blob=True, suppress_health_check=list(HealthCheck))


class Hang(Exception):
    pass


@contextmanager
def no_hang(what):
    def alarm(*_):
        raise Hang(f"{what} took over {HANG_S} s")

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(HANG_S)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def seeds() -> list[bytes]:
    """Valid encodings of a face crop in every accepted format and some odd variants."""
    from skimage import data

    face = Image.fromarray(data.astronaut()[40:300, 120:360])
    exif = Image.Exif()
    exif[0x0112] = 6
    variants = [
        (face, "JPEG", {}), (face, "JPEG", {"progressive": True, "exif": exif}), (face.convert("CMYK"), "JPEG", {}),
        (face, "PNG", {}), (face.convert("RGBA"), "PNG", {}), (face.convert("P"), "PNG", {}),
        (face.convert("L"), "PNG", {}), (Image.fromarray(np.asarray(face.convert("L")).astype(np.uint16) * 257), "PNG", {}),
        (face, "GIF", {}), (face, "BMP", {}), (face, "TIFF", {}), (face, "TIFF", {"compression": "tiff_lzw"}),
        (face, "WEBP", {}), (face, "WEBP", {"lossless": True}),
    ]
    out = []
    for image, fmt, kwargs in variants:
        buf = io.BytesIO()
        image.save(buf, fmt, **kwargs)
        out.append(buf.getvalue())
    return out


SEEDS = seeds()
OPS = st.sampled_from(["flip", "set", "insert", "delete", "truncate", "repeat"])
# Half of the edits land in the first 64 bytes, where headers (sizes, modes, chunk lengths) live.
POSITIONS = st.one_of(st.integers(0, 63), st.integers(0, 2**20))


@st.composite
def photo_bytes(draw) -> bytes:
    kind = draw(st.sampled_from(["mutated", "mutated", "mutated", "random", "header + random"]))
    if kind == "random":
        return draw(st.binary(max_size=4096))
    seed = draw(st.sampled_from(SEEDS))
    if kind == "header + random":
        return seed[: draw(st.integers(1, 64))] + draw(st.binary(max_size=4096))
    b = bytearray(seed)
    for op, pos, value in draw(st.lists(st.tuples(OPS, POSITIONS, st.binary(min_size=1, max_size=8)), min_size=1, max_size=8)):
        if not b:
            break
        pos %= len(b)
        if op == "flip":
            b[pos] ^= 1 << (value[0] % 8)
        elif op == "set":
            b[pos : pos + len(value)] = value
        elif op == "insert":
            b[pos:pos] = value
        elif op == "delete":
            del b[pos : pos + value[0] % 64 + 1]
        elif op == "truncate":
            del b[pos:]
        else:
            b[pos:pos] = b[pos : pos + 64] * (value[0] % 4 + 1)
    return bytes(b)


def run_photo(pipe, photo, outcomes):
    with no_hang("one photo"), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Pillow warns about corrupt EXIF and the like; the outcome is what counts
        try:
            result = pipe(photo)
        except Eye2FaceError as e:
            assert str(e), "an error without a message"
            outcomes.append(type(e).__name__)
            return
    assert result.real_face.shape == (128, 128, 3)
    outcomes.append("ok")


def test_fuzz_photo_bytes(pipe):
    outcomes = []

    @settings(FUZZ, max_examples=PHOTO_EXAMPLES)
    @given(photo_bytes())
    def check(photo):
        run_photo(pipe, photo, outcomes)

    check()
    # The fuzzer reached past the first checks: some inputs were decoded and searched for a face.
    assert len(outcomes) >= PHOTO_EXAMPLES
    assert {"InvalidImageError", "NoFaceError"} <= set(outcomes), sorted(set(outcomes))


def test_fuzz_arrays(pipe):
    outcomes = []
    dtypes = st.sampled_from([np.uint8, np.uint16, np.int64, np.float32, np.float64, bool])
    shapes = st.one_of(hnp.array_shapes(min_dims=0, max_dims=4, max_side=40),
                       st.tuples(st.integers(0, 300), st.integers(0, 300), st.sampled_from([1, 2, 3, 4, 5])))

    @settings(FUZZ, max_examples=150)
    @given(hnp.arrays(dtypes, shapes))
    def check(array):
        run_photo(pipe, array, outcomes)

    check()
    assert "InvalidImageError" in outcomes


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.floats() | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
WIDTHS = st.one_of(st.lists(st.integers(-2, 40), min_size=0, max_size=9), JSON)


@st.composite
def configs(draw) -> dict:
    config = {
        "encoder_widths": draw(WIDTHS),
        "latent_dim": draw(st.one_of(st.integers(-2, 64), st.sampled_from([10**9, 2**63]), JSON)),
        "decoder_widths": draw(WIDTHS),
        "loss_config": draw(st.one_of(st.none(), JSON)),
        "training": draw(st.one_of(st.none(), JSON)),
    }
    keep = draw(st.sets(st.sampled_from(sorted(config))))
    config = {k: v for k, v in config.items() if k in keep}
    config.update(draw(st.dictionaries(st.text(max_size=10), JSON, max_size=2)))
    return config


def test_fuzz_config_json(tmp_path_factory):
    folder = tmp_path_factory.mktemp("model")
    EyeToFace(encoder_widths=[8, 16], latent_dim=16, decoder_widths=[16, 8, 8, 8]).save_pretrained(folder)
    outcomes = []

    @settings(FUZZ, max_examples=300)
    @given(configs())
    def check(config):
        (folder / "config.json").write_text(json.dumps(config))
        with no_hang("loading one model"):
            try:
                EyeToFace.from_pretrained(folder)
                outcomes.append("loaded")
            except ModelLoadError as e:
                assert str(e)
                outcomes.append(type(e).__name__)

    check()
    assert "ModelConfigError" in outcomes
