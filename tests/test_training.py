"""The trainer as users launch it: accelerate launch, 2 CPU ranks, stop and resume."""

import json

import pytest
import torch
from safetensors.torch import load_file

from eye2face_hub import EyeToFace
from eye2face_hub.training import native_bf16

from .paths import VGG_FILE, need
from .training_run import ACCELERATE
from .training_run import train as run_trainer

pytestmark = pytest.mark.slow


def train(data, out, *extra, **kwargs) -> str:
    return run_trainer(data, out, "--batch-size", "4", *extra, **kwargs)


def test_two_cpu_ranks_see_different_data_and_end_identical(prepared_pairs, tmp_path):
    # `accelerate launch --cpu --num_processes 2` silently runs ONE process; this is the launch that gives 2 ranks.
    launcher = (ACCELERATE, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
                "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "29517")
    log = train(prepared_pairs, tmp_path, "--preset", "l1", "--max-steps", "4", "--record-ranks", launcher=launcher,
                ACCELERATE_USE_CPU="1")
    assert "rank 0 of 2" in log and "rank 1 of 2" in log
    ranks = [json.loads((tmp_path / f"rank-{r}.json").read_text()) for r in (0, 1)]
    assert [r["world_size"] for r in ranks] == [2, 2]
    seen = [set(r["first_epoch_samples"]) for r in ranks]
    assert seen[0] and seen[1] and not seen[0] & seen[1], "the two ranks trained on overlapping samples"
    assert ranks[0]["state_sha256"] == ranks[1]["state_sha256"], "ranks ended with different weights"
    saved = EyeToFace.from_pretrained(tmp_path)
    from train_accelerate import state_hash  # noqa: E402  (the repo root is on sys.path under pytest)

    assert state_hash(saved) == ranks[0]["state_sha256"], "the saved model differs from the trained one"
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["training"]["processes"] == 2 and config["loss_config"]["preset"] == "l1"


def test_resume_matches_an_uninterrupted_run(prepared_pairs, tmp_path):
    common = ["--preset", "feature", "--feature-layers", "0-4", "--vgg-weights", str(need(VGG_FILE)),
              "--checkpointing-steps", "3", "--seed", "7"]
    train(prepared_pairs, tmp_path / "straight", *common, "--max-steps", "6")
    train(prepared_pairs, tmp_path / "split", *common, "--max-steps", "3")
    log = train(prepared_pairs, tmp_path / "split", *common, "--max-steps", "6", "--resume-from-checkpoint", "latest")
    assert "resumed from" in log and "checkpoint-3" in log
    a = load_file(tmp_path / "straight" / "model.safetensors")
    b = load_file(tmp_path / "split" / "model.safetensors")
    assert a.keys() == b.keys()
    # Same data order, RNG and optimizer state: identical up to float reordering noise.
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6, msg=k)
    ca = json.loads((tmp_path / "straight" / "config.json").read_text())["training"]
    cb = json.loads((tmp_path / "split" / "config.json").read_text())["training"]
    assert ca["l_initial"] == cb["l_initial"] and all(v > 0 for v in ca["l_initial"])
    assert ca["steps"] == cb["steps"] == 6
    assert ca["resumed_at_steps"] == [] and cb["resumed_at_steps"] == [3], "config.json must record the resume"


@pytest.mark.parametrize("preset", ["l1", "feature"])
def test_validation_loss_goes_down(prepared_pairs, tmp_path, preset):
    extra = ["--feature-layers", "0-6", "--vgg-weights", str(need(VGG_FILE))] if preset == "feature" else []
    log = train(prepared_pairs, tmp_path, "--preset", preset, "--epochs", "4", "--batch-size", "8", *extra)
    import re

    values = [float(v) for v in re.findall(r"train loss ([0-9.]+)", log)]
    assert len(values) == 4, log[-2000:]
    assert values[-1] < values[0], f"training loss did not go down: {values}"
    model = EyeToFace.from_pretrained(tmp_path)
    assert model.loss_config["preset"] == preset


def test_a_run_continued_from_saved_weights_records_the_whole_chain(prepared_pairs, tmp_path):
    # How training outlives a machine: the next run starts from committed weights (--init-from), and config.json
    # and the model card still say the weights were trained from a fresh generator, in how many steps in all.
    train(prepared_pairs, tmp_path / "first", "--preset", "l1", "--max-steps", "2")
    train(prepared_pairs, tmp_path / "second", "--preset", "l1", "--max-steps", "3", "--init-from", str(tmp_path / "first"),
          "--mixed-precision", "bf16")
    first = json.loads((tmp_path / "first" / "config.json").read_text())["training"]
    second = json.loads((tmp_path / "second" / "config.json").read_text())["training"]
    assert first["from_scratch"] and len(first["stages"]) == 1 and first["total_steps"] == 2
    assert [s["steps"] for s in second["stages"]] == [2, 3] and second["stages"][1]["init_from"] == str(tmp_path / "first")
    assert second["from_scratch"] and second["total_steps"] == 5
    # A chain may change machines and precision (a CPU without native bf16 continues in float32): each stage says.
    assert [(s["device"], s["mixed_precision"]) for s in second["stages"]] == [("cpu", "no"), ("cpu", "bf16")]
    assert second["total_wall_time_s"] == pytest.approx(first["wall_time_s"] + second["wall_time_s"], abs=0.2)
    card = (tmp_path / "second" / "README.md").read_text()
    assert "from a freshly initialised generator" in card and "In total 5 steps" in card, card
    assert "(cpu, float32)" in card and "(cpu, bf16)" in card, card


def test_a_continued_run_keeps_the_feature_loss_it_continues(prepared_pairs, tmp_path):
    # l_initial is measured once, on the first stage's fresh generator; another seed would measure another.
    vgg = ["--preset", "feature", "--vgg-weights", str(need(VGG_FILE)), "--max-steps", "1"]
    train(prepared_pairs, tmp_path / "first", *vgg, "--feature-layers", "0-4", "--seed", "1")
    log = train(prepared_pairs, tmp_path / "same", *vgg, "--feature-layers", "0-4", "--seed", "2",
                "--init-from", str(tmp_path / "first"))
    train(prepared_pairs, tmp_path / "other", *vgg, "--feature-layers", "0-5", "--seed", "2", "--init-from", str(tmp_path / "first"))
    train(prepared_pairs, tmp_path / "fresh", *vgg, "--feature-layers", "0-4", "--seed", "2")
    l_initial = {name: json.loads((tmp_path / name / "config.json").read_text())["training"]["l_initial"]
                 for name in ("first", "same", "other", "fresh")}
    assert "carried over from" in log
    assert l_initial["same"] == l_initial["first"]
    assert l_initial["fresh"] != l_initial["first"], "seed 2 measured the same l_initial: the test shows nothing"
    assert len(l_initial["other"]) == 6 and l_initial["other"][:5] != l_initial["first"], "other layers: measured anew"


@pytest.mark.parametrize("record", [
    {"steps": 7, "device": "cpu", "args": {"mixed_precision": "bf16"}},  # before stages; precision in its flag only
    {"stages": [{"steps": 5}, {"steps": 7}], "device": "cpu", "mixed_precision": "bf16", "args": {"mixed_precision": None}},
    {"stages": [{"steps": 5}, {"steps": 7}], "device": "cpu", "args": {"mixed_precision": "bf16"}},
])
def test_an_older_record_lends_its_device_and_precision_to_its_last_stage(tmp_path, record):
    from train_accelerate import earlier_stages
    (tmp_path / "config.json").write_text(json.dumps({"training": {"args": {}, **record}}))
    stages = earlier_stages(str(tmp_path))
    assert stages[-1]["steps"] == 7 and (stages[-1]["device"], stages[-1]["mixed_precision"]) == ("cpu", "bf16")
    assert all("mixed_precision" not in s for s in stages[:-1])


def test_the_record_names_the_precision_that_accelerate_launch_chose(prepared_pairs, tmp_path):
    # `accelerate launch --mixed_precision bf16` reaches the trainer as ACCELERATE_MIXED_PRECISION, not as its flag.
    out = train(prepared_pairs, tmp_path, "--preset", "l1", "--max-steps", "1", ACCELERATE_MIXED_PRECISION="bf16")
    assert ("bf16 on this CPU is emulated" in out) == (not native_bf16("cpu")), out[-3000:]
    training = json.loads((tmp_path / "config.json").read_text())["training"]
    assert training["args"]["mixed_precision"] is None and training["mixed_precision"] == "bf16"
    card = (tmp_path / "README.md").read_text()
    assert "mixed precision bf16," in card, card


@pytest.mark.parametrize("avx512_bf16, amx, native", [(False, False, False), (True, False, True), (False, True, True)])
def test_bf16_is_native_on_a_cpu_only_with_avx512_bf16_or_amx(monkeypatch, avx512_bf16, amx, native):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    assert native_bf16("cpu") == native and native_bf16("cuda")
