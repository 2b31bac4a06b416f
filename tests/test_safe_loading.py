"""Loading models safely: safetensors only, config.json validated, an unreachable Hub fails fast.

Hub tests run `EyeToFace.from_pretrained` in a fresh Python process pointed at a local fake Hub (HF_ENDPOINT),
with its own HF_HOME, so that nothing here touches the network or the user's cache.
"""

from __future__ import annotations

import json
import os
import pickle
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import save_file

from eye2face_hub import EyeToFace
from eye2face_hub.hub import (
    MAX_PARAMETERS,
    HubUnreachableError,
    ModelConfigError,
    ModelLoadError,
    ModelNotFoundError,
    UnsafeCheckpointError,
)
from tests.app_fixtures import FakeHub

SMALL = {"encoder_widths": [8, 16], "latent_dim": 16, "decoder_widths": [16, 8, 8, 8]}


class Booby:
    """Unpickling this creates `path`: the proof that a pickle was (never) loaded."""

    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        return (Path.touch, (self.path,))


def save_small(folder: Path, seed: int = 0) -> EyeToFace:
    torch.manual_seed(seed)
    model = EyeToFace(**SMALL).eval()
    model.save_pretrained(folder)
    return model


def same_weights(a: EyeToFace, b: EyeToFace) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# ------------------------------------------------------------------------------------------------ pickles, local


def test_local_folder_with_only_a_pickle_is_refused(tmp_path):
    marker = tmp_path / "pickle-ran"
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(SMALL))
    (folder / "pytorch_model.bin").write_bytes(pickle.dumps(Booby(marker)))
    with pytest.raises(UnsafeCheckpointError, match="only the pickle checkpoint pytorch_model.bin: refusing"):
        EyeToFace.from_pretrained(folder)
    assert not marker.exists(), "the pickle was unpickled"
    with pytest.raises(UnsafeCheckpointError, match="pickle"):  # the mixin's own fallback is closed too
        EyeToFace._load_as_pickle(EyeToFace(**SMALL), str(folder / "pytorch_model.bin"), "cpu", True)
    assert not marker.exists()


def test_local_folder_with_safetensors_and_a_pickle_loads_the_safetensors(tmp_path):
    marker = tmp_path / "pickle-ran"
    model = save_small(tmp_path / "model")
    (tmp_path / "model" / "pytorch_model.bin").write_bytes(pickle.dumps(Booby(marker)))
    assert same_weights(EyeToFace.from_pretrained(tmp_path / "model"), model)
    assert not marker.exists()


# ------------------------------------------------------------------------------------------------ config.json


BAD_CONFIGS = {
    "unknown key": ({"dropout": 0.1}, "unknown keys \\['dropout'\\]"),
    "latent_dim as text": ({"latent_dim": "256"}, "latent_dim must be a positive integer, got '256'"),
    "latent_dim float": ({"latent_dim": 16.0}, "latent_dim must be a positive integer"),
    "latent_dim bool": ({"latent_dim": True}, "latent_dim must be a positive integer"),
    "latent_dim null": ({"latent_dim": None}, "latent_dim must be a positive integer"),
    "latent_dim negative": ({"latent_dim": -3}, "latent_dim must be a positive integer"),
    "widths a number": ({"encoder_widths": 32}, "encoder_widths must be a non-empty list of positive integers"),
    "widths empty": ({"encoder_widths": []}, "encoder_widths must be a non-empty list"),
    "widths with text": ({"encoder_widths": [8, "16"]}, "encoder_widths must be a non-empty list"),
    "widths zero": ({"decoder_widths": [16, 0, 8, 8]}, "decoder_widths must be a non-empty list"),
    "widths object": ({"decoder_widths": {"a": 1}}, "decoder_widths must be a non-empty list"),
    "too deep encoder": ({"encoder_widths": [8] * 6}, "6 encoder blocks would shrink a 32px eye below 1px"),
    "too deep decoder": ({"decoder_widths": [8] * 8}, "8 decoder blocks cannot start below 1px"),
    "huge latent": ({"latent_dim": 10**12}, "parameters, over the 50,000,000 limit"),
    "huge last decoder": ({"decoder_widths": [16, 16, 16, 16, 20_000]}, "over the 50,000,000 limit"),
    "loss_config a list": ({"loss_config": [1, 2]}, "loss_config must be a JSON object or null, got list"),
    "training a string": ({"training": "yes"}, "training must be a JSON object or null, got str"),
}


@pytest.mark.parametrize("name", BAD_CONFIGS)
def test_bad_config_json_is_refused_clearly(tmp_path, name):
    change, message = BAD_CONFIGS[name]
    save_small(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert EyeToFace.from_pretrained(tmp_path)  # the unchanged config loads
    (tmp_path / "config.json").write_text(json.dumps({**config, **change}))
    with pytest.raises(ModelConfigError, match=message) as e:
        EyeToFace.from_pretrained(tmp_path)
    assert str(tmp_path) in str(e.value) and "config.json" in str(e.value)


@pytest.mark.parametrize(
    "text, message",
    [
        ("{'latent_dim': 16}", "is not valid JSON"),
        ('{"latent_dim": 16', "is not valid JSON"),
        ("[8, 16]", "must hold a JSON object of model settings, got list"),
        ('"hello"', "must hold a JSON object of model settings, got str"),
        ('{"latent_dim": 16' + " " * 2_000_000 + "}", "2,000,018 bytes; a model config is a few kB"),
        ("[" * 100_000 + "]" * 100_000, "is not valid JSON"),
    ],
    ids=["python dict", "cut short", "array", "string", "huge", "deeply nested"],
)
def test_config_json_that_is_not_a_settings_object(tmp_path, text, message):
    save_small(tmp_path)
    (tmp_path / "config.json").write_text(text)
    with pytest.raises(ModelConfigError, match=message):
        EyeToFace.from_pretrained(tmp_path)


def test_arguments_are_checked_like_config_json(tmp_path):
    save_small(tmp_path)
    with pytest.raises(ModelConfigError, match="latent_dim must be a positive integer"):
        EyeToFace.from_pretrained(tmp_path, latent_dim="big")
    with pytest.raises(ModelConfigError, match="encoder_widths must be a non-empty list"):
        EyeToFace(encoder_widths=5)  # not a TypeError from inside torch
    assert isinstance(ModelConfigError("x"), ValueError)


def test_weights_that_do_not_match_config_json(tmp_path):
    save_small(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "latent_dim": 32}))
    with pytest.raises(ModelConfigError, match="do not match config.json: size mismatch for to_latent.weight"):
        EyeToFace.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({**config, "encoder_widths": [8, 16, 32]}))
    with pytest.raises(ModelConfigError, match="do not match config.json"):
        EyeToFace.from_pretrained(tmp_path)


def test_damaged_or_fake_safetensors(tmp_path):
    save_small(tmp_path)
    weights = tmp_path / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelLoadError, match="is damaged or not a safetensors file"):
        EyeToFace.from_pretrained(tmp_path)
    marker = tmp_path / "pickle-ran"
    weights.write_bytes(pickle.dumps(Booby(marker)))  # a pickle named model.safetensors is not unpickled either
    with pytest.raises(ModelLoadError, match="is damaged or not a safetensors file"):
        EyeToFace.from_pretrained(tmp_path)
    assert not marker.exists()


def test_weights_with_nan_are_refused(tmp_path):
    model = save_small(tmp_path)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    state["to_rgb.bias"][0] = float("nan")
    save_file(state, tmp_path / "model.safetensors")
    with pytest.raises(ModelConfigError, match="NaN or infinite values"):
        EyeToFace.from_pretrained(tmp_path)


@settings(max_examples=40, deadline=None, database=None)
@given(
    encoder=st.lists(st.integers(1, 12), min_size=1, max_size=5),
    latent=st.integers(1, 24),
    decoder=st.lists(st.integers(1, 12), min_size=1, max_size=7),
)
def test_parameter_limit_counts_exactly(encoder, latent, decoder):
    # The limit is checked before anything is allocated (on the meta device), so the count must be the real one.
    config = {"encoder_widths": encoder, "latent_dim": latent, "decoder_widths": decoder}
    model = EyeToFace(**config)
    assert EyeToFace.parameter_count(config) == sum(p.numel() for p in model.parameters())
    assert EyeToFace.parameter_count({}) < MAX_PARAMETERS


# ------------------------------------------------------------------------------------------------ the Hub


class SilentHub:
    """Accepts TCP connections and never answers: a Hub behind a firewall that drops replies."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.connections, self.held = 0, []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            self.held.append(conn)

    def close(self):
        self.sock.close()
        for conn in self.held:
            conn.close()


LOAD = """
import json, sys
from eye2face_hub.model import EyeToFace
try:
    model = EyeToFace.from_pretrained(sys.argv[1])
    print(json.dumps({"ok": True, "sum": float(sum(p.double().sum() for p in model.state_dict().values()))}))
except Exception as e:
    print(json.dumps({"ok": False, "types": [c.__name__ for c in type(e).__mro__], "message": str(e)}))
"""


def load_in_subprocess(model_id: str, endpoint: str, hf_home: Path, **env) -> dict:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING_FACE"))}
    proc = subprocess.run(
        [sys.executable, "-c", LOAD, model_id],
        capture_output=True, text=True, timeout=300,
        env={**clean, "HF_ENDPOINT": endpoint, "HF_HOME": str(hf_home), "HF_HUB_DISABLE_TELEMETRY": "1",
             "EYE2FACE_HUB_TIMEOUT": "2", **env},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["stderr"] = proc.stderr
    return result


def weight_sum(model: EyeToFace) -> float:
    return float(sum(p.double().sum() for p in model.state_dict().values()))


@pytest.fixture
def repos(tmp_path):
    folder = tmp_path / "saved"
    model = save_small(folder, seed=3)
    good = {name: (folder / name).read_bytes() for name in ("config.json", "model.safetensors")}
    marker = tmp_path / "pickle-ran"
    pickled = {"config.json": good["config.json"], "pytorch_model.bin": pickle.dumps(Booby(marker))}
    return {"me/good": good, "me/pickled": pickled}, weight_sum(model), marker


def test_hub_pickle_fallback_is_refused_without_downloading_it(tmp_path, repos):
    files, expected, marker = repos
    with FakeHub(files) as hub:
        good = load_in_subprocess("me/good", hub.url, tmp_path / "hf")
        assert good["ok"] and good["sum"] == pytest.approx(expected)  # the fake Hub serves a real model
        bad = load_in_subprocess("me/pickled", hub.url, tmp_path / "hf")
    assert not bad["ok"] and "UnsafeCheckpointError" in bad["types"] and "ModelLoadError" in bad["types"]
    assert "has no model.safetensors" in bad["message"] and "pickle checkpoints" in bad["message"]
    assert "model.safetensors" in hub.files_asked("me/pickled")
    assert "pytorch_model.bin" not in hub.files_asked("me/pickled"), "the pickle was downloaded"
    assert not marker.exists()


def test_cached_hub_pickle_is_refused_offline(tmp_path, repos):
    files, _, marker = repos
    commit = "a" * 40
    repo_cache = tmp_path / "hf" / "hub" / "models--me--pickled"
    (repo_cache / "refs").mkdir(parents=True)
    (repo_cache / "refs" / "main").write_text(commit)
    snapshot = repo_cache / "snapshots" / commit
    snapshot.mkdir(parents=True)
    for name, data in files["me/pickled"].items():
        (snapshot / name).write_bytes(data)
    result = load_in_subprocess("me/pickled", "http://127.0.0.1:9", tmp_path / "hf", HF_HUB_OFFLINE="1")
    assert not result["ok"] and "UnsafeCheckpointError" in result["types"], result
    assert "only a pickle checkpoint (pytorch_model.bin) is cached" in result["message"]
    assert not marker.exists()


def test_unknown_hub_repo(tmp_path):
    with FakeHub({}) as hub:
        result = load_in_subprocess("me/nothing-here", hub.url, tmp_path / "hf")
    assert not result["ok"] and "ModelNotFoundError" in result["types"]
    assert "not a local folder, and the Hub has no model of that name" in result["message"]
    assert len(hub.requests) == 1  # one answer is enough


def test_unreachable_hub_fails_fast_with_a_clear_message(tmp_path):
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    refused_url = f"http://127.0.0.1:{closed.getsockname()[1]}"  # bound, not listening: connection refused
    try:
        refused = load_in_subprocess("me/good", refused_url, tmp_path / "hf")
    finally:
        closed.close()
    assert not refused["ok"] and "HubUnreachableError" in refused["types"] and "ConnectionError" in refused["types"]
    assert "could not reach the Hugging Face Hub to download me/good" in refused["message"]
    assert "not in the local cache" in refused["message"] and "Retrying" not in refused["stderr"]

    silent = SilentHub()  # answers nothing: only the timeout (EYE2FACE_HUB_TIMEOUT=2) ends the wait
    try:
        result = load_in_subprocess("me/good", silent.url, tmp_path / "hf")
    finally:
        silent.close()
    assert not result["ok"] and "HubUnreachableError" in result["types"], result
    assert "Timeout" in result["message"]
    assert silent.connections == 1, f"{silent.connections} connections: the Hub was retried"


def test_unreachable_hub_falls_back_to_the_cache(tmp_path, repos):
    files, expected, _ = repos
    with FakeHub(files) as hub:
        assert load_in_subprocess("me/good", hub.url, tmp_path / "hf")["ok"]  # fills the cache
    silent = SilentHub()
    try:
        result = load_in_subprocess("me/good", silent.url, tmp_path / "hf")
    finally:
        silent.close()
    assert result["ok"] and result["sum"] == pytest.approx(expected)
    assert silent.connections == 1


def test_offline_and_not_cached(tmp_path):
    result = load_in_subprocess("me/good", "http://127.0.0.1:9", tmp_path / "hf", HF_HUB_OFFLINE="1")
    assert not result["ok"] and "ModelNotFoundError" in result["types"]
    assert "not in the local cache and downloads are off (HF_HUB_OFFLINE=1" in result["message"]


def test_neither_a_folder_nor_a_repo_id(tmp_path):
    with pytest.raises(ModelNotFoundError, match="no such model folder, and not a Hub repo id"):
        EyeToFace.from_pretrained(str(tmp_path / "runs" / "l1" / "final"))
    save_small(tmp_path / "m")
    with pytest.raises(ModelNotFoundError, match="is a file; pass the model folder"):
        EyeToFace.from_pretrained(str(tmp_path / "m" / "model.safetensors"))
    assert issubclass(HubUnreachableError, ModelLoadError) and issubclass(ModelNotFoundError, FileNotFoundError)
