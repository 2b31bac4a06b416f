"""The GAN comparison: the conditional critic, WGAN-GP's estimates, and the trainer with a critic."""

import json
import math
import re

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from eye2face_hub import EyeToFace, load_generator
from eye2face_hub.critic import Critic
from eye2face_hub.data import EyeFacePairs, load_pairs
from eye2face_hub.losses import LossConfig, critic_terms
from eye2face_hub.data import as_input
from eye2face_hub.training import CriticStep

from .training_run import ACCELERATE, train


class LinearCritic(nn.Module):
    """critic(face, eye) = <w, face> + <v, eye>: its gradient in the face is w everywhere."""

    def __init__(self, w: torch.Tensor, v: torch.Tensor):
        super().__init__()
        self.w, self.v = nn.Parameter(w), nn.Parameter(v)

    def forward(self, face, eye):
        return (face * self.w).flatten(1).sum(1) + (eye * self.v).flatten(1).sum(1)


def test_gradient_penalty_and_wasserstein_by_hand():
    g = torch.Generator().manual_seed(0)
    w, v = torch.randn(3, 8, 8, generator=g) * 0.1, torch.randn(3, 4, 4, generator=g)
    real, fake = torch.rand(5, 3, 8, 8, generator=g), torch.rand(5, 3, 8, 8, generator=g)
    eye = torch.rand(5, 3, 4, 4, generator=g)
    critic = LinearCritic(w.clone(), v.clone())
    terms = critic_terms(critic, real, fake, eye, torch.rand(5, 1, 1, 1, generator=g))
    assert terms["gradient_penalty"].item() == pytest.approx((w.norm().item() - 1) ** 2, rel=1e-5)
    expected = ((real - fake) * w).flatten(1).sum(1).mean()  # the eye's term cancels: same eye on both sides
    assert terms["wasserstein"].item() == pytest.approx(expected.item(), rel=1e-5, abs=1e-6)
    terms["gradient_penalty"].backward()  # the penalty trains the critic: d/dw (|w| - 1)^2 = 2 (|w| - 1) w / |w|
    torch.testing.assert_close(critic.w.grad, 2 * (w.norm() - 1) * w / w.norm(), rtol=1e-4, atol=1e-6)


def test_critic_separates_real_from_generated_faces(prepared_pairs):
    pairs = EyeFacePairs(load_pairs(str(prepared_pairs)), progress=False)
    eyes, faces = (torch.stack(t) for t in zip(*(pairs[i] for i in range(len(pairs)))))
    torch.manual_seed(0)
    generator, critic = EyeToFace().train(), Critic()
    step = CriticStep(critic, generator, torch.optim.Adam(critic.parameters(), lr=1e-4, betas=(0.0, 0.9)))
    for i in range(40):
        idx = torch.randint(0, len(eyes), (16,))
        terms = step(eyes[idx], faces[idx])
    assert terms["wasserstein"].item() > 0
    with torch.no_grad():
        eye, real = as_input(eyes), as_input(faces)
        s_real, s_fake = critic(real, eye), critic(generator(eye), eye)
    auc = (s_real[:, None] > s_fake[None, :]).float().mean().item()  # P(a real face outscores a generated one)
    assert auc > 0.9, f"the critic does not tell real faces from generated ones (AUC {auc:.2f})"


def test_gan_presets():
    wgan, fgan = LossConfig.from_preset("wgan-gp"), LossConfig.from_preset("feature-gan")
    assert wgan.uses_critic and not wgan.uses_vgg and wgan.l1_weight == wgan.std_weight == 0
    assert fgan.uses_critic and fgan.uses_vgg and fgan.std_weight == 1 and 0 < fgan.adversarial_weight < 1
    assert not LossConfig.from_preset("feature").uses_critic


COMMON = ["--preset", "wgan-gp", "--batch-size", "4", "--critic-steps", "3", "--seed", "3"]


@pytest.mark.slow
def test_resume_with_a_critic_matches_an_uninterrupted_run(prepared_pairs, tmp_path):
    # 3 critic steps do not divide an epoch's batches: its last generator step comes after fewer critic updates,
    # and the resume point (step 5, in the second epoch) must be found in batches all the same.
    log = train(prepared_pairs, tmp_path / "straight", *COMMON, "--max-steps", "6", "--checkpointing-steps", "5")
    batches, steps_per_epoch = (int(v) for v in re.search(r"(\d+) batches/epoch, (\d+) steps/epoch", log).groups())
    assert batches % 3 and steps_per_epoch == math.ceil(batches / 3) and 5 > steps_per_epoch, log[-2000:]
    train(prepared_pairs, tmp_path / "split", *COMMON, "--max-steps", "5", "--checkpointing-steps", "5")
    log = train(prepared_pairs, tmp_path / "split", *COMMON, "--max-steps", "6", "--checkpointing-steps", "5",
                "--resume-from-checkpoint", "latest")
    assert "resumed from" in log
    for folder in ("checkpoint-5",):  # the critic's weights are in the checkpoints too
        a = load_file(tmp_path / "straight" / folder / "model_1.safetensors")
        b = load_file(tmp_path / "split" / folder / "model_1.safetensors")
        for k in a:
            torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6, msg=f"critic {k}")
    a, b = load_file(tmp_path / "straight" / "model.safetensors"), load_file(tmp_path / "split" / "model.safetensors")
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6, msg=k)
    config = json.loads((tmp_path / "split" / "config.json").read_text())
    assert config["loss_config"]["preset"] == "wgan-gp" and config["training"]["args"]["critic_steps"] == 3
    assert set(load_file(tmp_path / "split" / "model.safetensors")) == set(EyeToFace().state_dict())  # generator only
    assert type(load_generator(tmp_path / "split")) is EyeToFace


@pytest.mark.slow
def test_a_gan_run_continued_from_its_folder_goes_on_with_its_critic(prepared_pairs, tmp_path):
    train(prepared_pairs, tmp_path / "first", *COMMON, "--max-steps", "2", "--checkpointing-steps", "2")
    critic = load_file(tmp_path / "first" / "critic.safetensors")
    for k, v in load_file(tmp_path / "first" / "checkpoint-2" / "model_1.safetensors").items():
        torch.testing.assert_close(critic[k], v, rtol=0, atol=0, msg=f"critic {k}: not the run's last critic")
    # Learning rates too small to move a weight: the continued run's critic is the first run's, not a fresh one.
    log = train(prepared_pairs, tmp_path / "second", *COMMON, "--max-steps", "1", "--init-from", str(tmp_path / "first"),
                "--lr", "1e-30", "--critic-lr", "1e-30")
    assert "critic: the one of" in log
    for k, v in load_file(tmp_path / "second" / "critic.safetensors").items():
        torch.testing.assert_close(v, critic[k], msg=f"critic {k}")
    stages = json.loads((tmp_path / "second" / "config.json").read_text())["training"]["stages"]
    assert [s["critic_from"] for s in stages] == [None, str(tmp_path / "first")]
    # A generator folder without a critic (e.g. a bundled model): a fresh critic, and the record says so.
    (tmp_path / "first" / "critic.safetensors").unlink()
    log = train(prepared_pairs, tmp_path / "third", *COMMON, "--max-steps", "1", "--init-from", str(tmp_path / "first"))
    assert "critic: freshly initialised" in log
    assert json.loads((tmp_path / "third" / "config.json").read_text())["training"]["stages"][-1]["critic_from"] is None


@pytest.mark.slow
def test_two_ranks_with_a_critic(prepared_pairs, tmp_path):
    launcher = (ACCELERATE, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
                "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "29519")
    log = train(prepared_pairs, tmp_path, *COMMON, "--max-steps", "3", "--record-ranks", launcher=launcher,
                ACCELERATE_USE_CPU="1")
    assert "rank 0 of 2" in log and "rank 1 of 2" in log
    ranks = [json.loads((tmp_path / f"rank-{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["state_sha256"] == ranks[1]["state_sha256"], "ranks ended with different generator weights"
    assert load_generator(tmp_path).loss_config["preset"] == "wgan-gp"
