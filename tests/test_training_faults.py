"""Training faults: a SIGKILL mid-run loses at most the steps since the last checkpoint; a half-written
checkpoint is never resumed from; bad arguments fail at start with a clear message, not a traceback."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file

from .paths import REPO, VGG_FILE, need
from .training_run import env, train_command
from .training_run import train as run_trainer

pytestmark = pytest.mark.slow
COMMON = ["--batch-size", "4", "--preset", "l1", "--seed", "5"]


def train(data, out, *extra) -> str:
    return run_trainer(data, out, *COMMON, *extra)


def complete_checkpoints(out: Path) -> list[int]:
    return sorted(int(m[1]) for p in out.iterdir() if (m := re.fullmatch(r"checkpoint-(\d+)", p.name)))


# ------------------------------------------------------------------------------------------------------- SIGKILL


def test_sigkill_mid_run_resumes_from_the_last_complete_checkpoint(prepared_pairs, tmp_path):
    every, total = 2, 12
    out = tmp_path / "killed"
    log_file = tmp_path / "killed.log"
    with open(log_file, "w") as log:
        proc = subprocess.Popen(
            train_command(prepared_pairs, out, *COMMON, "--checkpointing-steps", str(every), "--max-steps", "100000"),
            cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env=env(),
        )
        try:
            # Kill at the moment a newer checkpoint is being written after checkpoint-4: usually mid-write.
            deadline = time.monotonic() + 540
            while not ((out / "checkpoint-4").is_dir() and any(p.name.endswith(".tmp") for p in out.iterdir())):
                assert proc.poll() is None, log_file.read_text()[-3000:]
                assert time.monotonic() < deadline, "no checkpoint after 540 s"
                time.sleep(0.02)
            os.kill(proc.pid, signal.SIGKILL)
        finally:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    done = max(int(n) for n in re.findall(r"(\d+)/100000", log_file.read_text()))  # last step the bar showed
    last = complete_checkpoints(out)[-1]
    assert done - last <= every, f"{done} steps done, but the last complete checkpoint is {last}"
    # Whatever the kill left half-written, plus a complete-looking `.tmp` with a higher step: neither is `latest`.
    shutil.copytree(out / f"checkpoint-{last}", out / "checkpoint-1000.tmp")
    half = out / f"checkpoint-{last + every}.tmp"
    if not half.exists():
        shutil.copytree(out / f"checkpoint-{last}", half)
        (half / "model.safetensors").write_bytes(b"\0" * 10)
    leftovers = sorted(p.name for p in out.iterdir() if p.name.endswith(".tmp"))

    log = train(prepared_pairs, out, "--checkpointing-steps", str(every), "--max-steps", str(total),
                "--resume-from-checkpoint", "latest")
    assert f"resumed from {out / f'checkpoint-{last}'} at step {last}" in log, (leftovers, log[-3000:])
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")], "leftover checkpoints were not cleared"
    assert json.loads((out / "config.json").read_text())["training"]["steps"] == total

    # Nothing lost: the same weights as a run that was never interrupted.
    train(prepared_pairs, tmp_path / "straight", "--checkpointing-steps", str(every), "--max-steps", str(total))
    a, b = load_file(out / "model.safetensors"), load_file(tmp_path / "straight" / "model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6, msg=k)


def test_latest_is_never_a_half_written_checkpoint(tmp_path):
    from train_accelerate import checkpoints

    for name in ("checkpoint-2", "checkpoint-10", "checkpoint-12.tmp", "checkpoint-40.old.tmp", "checkpoint-x"):
        (tmp_path / name).mkdir()
    (tmp_path / "checkpoint-50").write_text("a file, not a checkpoint")
    assert [p.name for p in checkpoints(str(tmp_path))] == ["checkpoint-2", "checkpoint-10"]


class FakeAccelerator:
    is_main_process = True

    def wait_for_everyone(self):
        pass

    def save_state(self, folder):
        Path(folder).mkdir()
        for name in ("model.safetensors", "optimizer.bin", "random_states_0.pkl"):
            (Path(folder) / name).write_text(f"complete {Path(folder).name}")


class Killed(BaseException):
    pass


@pytest.mark.parametrize("resave", [False, True], ids=["new step", "same step again"])
def test_a_kill_at_any_point_of_saving_leaves_only_complete_checkpoints(tmp_path, monkeypatch, resave):
    """Kill the save after each filesystem operation, and in the middle of each deletion: every folder named
    checkpoint-N must still be complete. (`same step again`: resuming from an older checkpoint re-saves a step.)"""
    import train_accelerate as ta

    step = 6 if resave else 8
    real_replace, real_rmtree = os.replace, shutil.rmtree
    crash_points = None
    for crash_at in range(1, 100):
        out = tmp_path / f"run{crash_at}"
        out.mkdir()
        for s in (2, 4, 6):
            FakeAccelerator().save_state(out / f"checkpoint-{s}")
        calls = [0]

        def maybe_die(half=None):
            calls[0] += 1
            if calls[0] == crash_at:
                if half is not None:  # killed half-way through deleting a folder
                    next(iter(sorted(Path(half).iterdir()))).unlink()
                raise Killed

        def replace(a, b):
            maybe_die()
            real_replace(a, b)

        def rmtree(path, ignore_errors=False):
            if Path(path).exists():
                maybe_die(half=path)
            real_rmtree(path, ignore_errors=ignore_errors)

        monkeypatch.setattr(ta.os, "replace", replace)
        monkeypatch.setattr(ta.shutil, "rmtree", rmtree)
        args = SimpleNamespace(output_dir=str(out), checkpoints_total_limit=2)
        try:
            ta.save_checkpoint(FakeAccelerator(), args, step)
            crash_points = crash_at
        except Killed:
            pass
        finally:
            monkeypatch.undo()
        for ckpt in ta.checkpoints(str(out)):
            files = {p.name: p.read_text() for p in ckpt.iterdir()}
            assert len(files) == 3 and all(v.startswith("complete") for v in files.values()), (crash_at, ckpt, files)
        if crash_points is not None:
            break
    assert crash_points is not None and crash_points > 3  # every operation was interrupted once
    assert [p.name for p in ta.checkpoints(str(out))] == [f"checkpoint-{s}" for s in ((4, 6) if resave else (6, 8))]
    assert sorted(p.name for p in out.iterdir()) == [p.name for p in ta.checkpoints(str(out))]  # no leftovers


# ------------------------------------------------------------------------------------------------- bad arguments


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--focus-layer", "30"], "focus layer must be in 1..21, got 30"),
        (["--focus-layer", "0"], "focus layer must be in 1..21, got 0"),
        (["--feature-layers", "0-30"], "feature layers must be a non-empty subset of 0..21"),
        (["--feature-layers", "5-2"], "feature layers must be a non-empty subset of 0..21"),
        (["--feature-layers", "conv3"], "argument --feature-layers: invalid parse_layers value: 'conv3'"),
        (["--checkpointing-steps", "0"], "argument --checkpointing-steps: must be a positive integer, got 0"),
        (["--batch-size", "-4"], "argument --batch-size: must be a positive integer, got -4"),
        (["--logging-steps", "0"], "must be a positive integer"),
        (["--lr", "0"], "--lr must be positive"),
        (["--std-pool", "0"], "argument --std-pool: must be a positive integer, got 0"),
        (["--resume-from-checkpoint", "runs/x/checkpoint-8.tmp"], "not a complete checkpoint folder"),
        (["--push-samples"], "--push-samples goes with --push-to-hub"),
    ],
)
def test_bad_arguments_are_refused_by_the_parser(argv, message, capsys, tmp_path):
    from train_accelerate import parse_args

    with pytest.raises(SystemExit) as e:
        parse_args(["--data", str(tmp_path), "--output-dir", str(tmp_path / "out"), *argv])
    assert e.value.code == 2
    assert message in capsys.readouterr().err


def test_std_pool_reaches_the_loss_config(tmp_path):
    from train_accelerate import loss_config_from_args, parse_args

    base = ["--data", str(tmp_path), "--output-dir", str(tmp_path / "out"), "--preset", "feature"]
    assert loss_config_from_args(parse_args(base)).std_pool == 1  # the paper's per-pixel sigma by default
    assert loss_config_from_args(parse_args([*base, "--std-pool", "4"])).to_dict()["std_pool"] == 4


RUN_MAIN = """
import json, sys, traceback
import train_accelerate as ta
decoded = []
real = ta.EyeFacePairs
ta.EyeFacePairs = lambda *a, **k: decoded.append(1) or real(*a, **k)
results = []
for argv in json.loads(sys.argv[1]):
    decoded.clear()
    try:
        ta.main(argv)
        results.append({"outcome": "trained"})
    except SystemExit as e:
        results.append({"outcome": "exit", "code": e.code if isinstance(e.code, str) else repr(e.code), "decoded": bool(decoded)})
    except BaseException as e:
        results.append({"outcome": "traceback", "error": traceback.format_exc()[-1500:], "decoded": bool(decoded)})
print("RESULTS" + json.dumps(results))
"""


@pytest.fixture(scope="module")
def small_datasets(prepared_pairs, celeba_sample, tmp_path_factory):
    from PIL import Image

    from eye2face_hub.data import load_pairs, prepare

    root = tmp_path_factory.mktemp("datasets")
    faceless = root / "faceless"  # prepared from photos without faces: a dataset with no rows
    faceless.mkdir()
    Image.new("RGB", (256, 256), "gray").save(faceless / "wall.jpg")
    prepare(str(faceless), str(root / "empty"))
    pairs = load_pairs(str(prepared_pairs))
    pairs.select([]).save_to_disk(root / "no-shards")  # datasets 5.2 cannot load this one back
    pairs.select([0]).save_to_disk(root / "one")
    photos = root / "photos"  # a folder of photos that were never prepared
    photos.mkdir()
    shutil.copy(sorted(celeba_sample.glob("*.jpg"))[0], photos)
    return root


def test_bad_weights_and_data_fail_at_start_with_a_clear_message(prepared_pairs, small_datasets, tmp_path):
    vgg = str(need(VGG_FILE))  # VGG19 weights up to layer 11 (block3_pool)
    base = ["--output-dir", str(tmp_path / "out"), *COMMON, "--max-steps", "2", "--no-compile"]
    cases = {
        "layer 12 of an 11-layer VGG": (
            ["--data", str(prepared_pairs), *base, "--preset", "feature", "--feature-layers", "0-12", "--vgg-weights", vgg],
            "holds VGG19 weights for layers 0..11 (up to block3_pool); layer 12 (block4_conv1) needs deeper weights",
        ),
        "all 22 layers of an 11-layer VGG": (
            ["--data", str(prepared_pairs), *base, "--preset", "feature", "--vgg-weights", vgg],
            "layer 21 (block5_pool) needs deeper weights",
        ),
        "missing VGG file": (
            ["--data", str(prepared_pairs), *base, "--preset", "feature", "--vgg-weights", str(tmp_path / "vgg.safetensors")],
            "VGG19 weights file not found",
        ),
        "empty dataset": (["--data", str(small_datasets / "empty"), *base], "has 0 photo rows; at least 2 are needed"),
        "empty, saved without shards": (["--data", str(small_datasets / "no-shards"), *base], "error: could not read"),
        "one photo": (["--data", str(small_datasets / "one"), *base], "has 1 photo rows; at least 2 are needed"),
        "photos, not pairs": (["--data", str(small_datasets / "photos"), *base], "error: "),
        "no such folder": (["--data", str(tmp_path / "nothing"), *base], "error: "),
    }
    proc = subprocess.run(
        [sys.executable, "-c", RUN_MAIN, json.dumps([argv for argv, _ in cases.values()])],
        cwd=REPO, capture_output=True, text=True, timeout=600, env=env(),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(proc.stdout.split("RESULTS")[-1])
    for (name, (_, message)), result in zip(cases.items(), results):
        assert result["outcome"] == "exit", f"{name}: {result}"
        assert result["code"].startswith("error: ") and message in result["code"], f"{name}: {result['code']}"
        assert not result["decoded"], f"{name}: failed only after the data was decoded"
    assert not (tmp_path / "out" / "model.safetensors").exists()


# ------------------------------------------------------------------------------------------------- publishing


class RecordingHub:
    """HfApi's two calls `publish` makes, recorded; `fail` makes the upload raise as without a token."""

    calls: list = []
    fail = False

    def create_repo(self, repo_id, **kwargs):
        self.calls.append(("create_repo", repo_id))

    def upload_folder(self, repo_id, folder_path, ignore_patterns):
        if self.fail:
            raise PermissionError("401 Unauthorized")
        self.calls.append(("upload_folder", repo_id, sorted(ignore_patterns)))


@pytest.mark.parametrize("push_samples", [False, True])
def test_the_sample_grid_of_your_photos_is_pushed_only_when_asked(tmp_path, monkeypatch, push_samples):
    import huggingface_hub
    from accelerate import PartialState

    from eye2face_hub import load_generator
    from eye2face_hub.losses import LossConfig
    from train_accelerate import parse_args, publish

    bundled = REPO / "weights" / "eye2face-feature"
    config = json.loads((bundled / "config.json").read_text())
    out = tmp_path / "run"
    out.mkdir()
    (out / "samples.png").write_bytes(b"a grid of validation crops")
    monkeypatch.setattr(huggingface_hub, "HfApi", RecordingHub)
    RecordingHub.calls, RecordingHub.fail = [], False
    PartialState(cpu=True)  # publish logs through accelerate, as in a run
    argv = ["--data", str(tmp_path), "--output-dir", str(out), "--push-to-hub", "--hub-model-id", "me/eye2face"]
    args = parse_args([*argv, *(["--push-samples"] if push_samples else [])])

    publish(load_generator(bundled), LossConfig.from_dict(config["loss_config"]), config["training"], args)
    (_, _), (_, repo, ignored) = RecordingHub.calls
    assert repo == "me/eye2face" and "checkpoint-*" in ignored
    assert ("samples.png" not in ignored) == push_samples
    assert ("samples.png" in (out / "README.md").read_text()) == push_samples  # the card links only what is pushed

    RecordingHub.fail = True  # without a token: everything stays local, and the retry command keeps the same files out
    with pytest.raises(SystemExit) as e:
        publish(load_generator(bundled), LossConfig.from_dict(config["loss_config"]), config["training"], args)
    assert f"hf upload me/eye2face {out}" in str(e.value) and "401 Unauthorized" in str(e.value)
    assert ("--exclude 'samples.png'" in str(e.value)) == (not push_samples)
    assert (out / "model.safetensors").exists() and (out / "samples.png").exists()
