"""Training throughput: samples/s of the trainer's step for the l1 and feature presets; MFU on a GPU.

    python bench/bench_train.py --out bench/results-train.json [--presets l1 feature] [--steps 4]

The step is train_accelerate.py's: uint8 batch -> [0,1], eyes in channels_last, generator forward under
accelerate's autocast (bf16), loss (L1; or VGG19 feature loss on layers 0-11 + std loss), backward, Adam step,
zero_grad; generator and VGG in channels_last. Batch 64 (the trainer's default per process), random pixels
(the step's time does not depend on the content). The loss's l_initial comes from a fresh generator on the
first batch, as in the trainer. One process; on CPU with the threads given, on CUDA when there is a GPU.

FLOPs per training sample are counted analytically from the layer shapes (2 x multiply-adds of every conv,
transposed conv and linear layer): the generator's forward F_g, backward 2 F_g (input and weight gradients);
for the feature preset the frozen VGG runs forward on the real face (F_v), forward on the generated face (F_v)
and backward for the input gradient only (F_v): 3 F_g + 3 F_v. torch's FlopCounterMode is run on one step
as a cross-check. MFU = samples/s x FLOPs per sample / the card's dense bf16 peak (H200: 989 TFLOP/s).
The paper's full recipe (15,000 pairs x 150 epochs = 2.25M samples) is projected from the measured samples/s;
without a GPU, the H200 time is projected from the FLOPs at assumed MFUs, and says so. The step uses batches
already on the device; the trainer's DataLoader (collating 64 decoded pairs on the CPU) is timed on its own.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

import torch  # noqa: E402
from torch import nn  # noqa: E402

PAPER_SAMPLES = 15_000 * 150  # pairs x epochs
FEATURE_LAYERS = list(range(12))  # the shared VGG weights cover layers 0-11


def layer_flops(model: nn.Module, make_input, backward_input_only: bool = False) -> int:
    """2 x MACs of every Conv2d / ConvTranspose2d / Linear for one sample, from the shapes of one forward pass."""
    total = 0

    def hook(module, inputs, output):
        nonlocal total
        if isinstance(module, nn.Conv2d):
            k = module.kernel_size[0] * module.kernel_size[1] * module.in_channels // module.groups
            total += 2 * output[0].numel() * k
        elif isinstance(module, nn.ConvTranspose2d):
            k = module.kernel_size[0] * module.kernel_size[1] * module.out_channels // module.groups
            total += 2 * inputs[0][0].numel() * k  # each input element scatters into a k-sized output patch
        elif isinstance(module, nn.Linear):
            total += 2 * module.in_features * module.out_features

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear))]
    try:
        with torch.no_grad():
            make_input()
    finally:
        for h in handles:
            h.remove()
    return total


def analytic_flops(preset: str, vgg=None) -> dict:
    from eye2face_hub import EyeToFace

    g = EyeToFace().eval()
    f_g = layer_flops(g, lambda: g(torch.rand(1, 3, 32, 32)))
    out = {"generator_forward": f_g, "generator_train": 3 * f_g}
    if preset == "feature":
        f_v = layer_flops(vgg, lambda: vgg(torch.rand(1, 3, 128, 128), FEATURE_LAYERS))
        out.update(vgg_forward=f_v, vgg_train=3 * f_v)
    out["per_training_sample"] = out["generator_train"] + out.get("vgg_train", 0)
    return out


def build(preset: str, batch: int, device, mixed_precision: str):
    from accelerate import Accelerator

    from eye2face_hub.data import to_unit
    from eye2face_hub.losses import EyeToFaceLoss, LossConfig
    from eye2face_hub.model import EyeToFace
    from eye2face_hub.vgg import load_vgg19

    accelerator = Accelerator(mixed_precision=mixed_precision, cpu=device.type == "cpu")
    config = LossConfig.from_preset(preset, feature_layers=FEATURE_LAYERS, vgg_weights=str(common.VGG_FILE))
    vgg = load_vgg19(config.vgg_weights, max_layer=max(config.feature_layers)) if config.uses_vgg else None
    flops, counted = analytic_flops(preset, vgg), counted_flops(preset, vgg)
    torch.manual_seed(0)
    model = EyeToFace().to(memory_format=torch.channels_last)
    criterion = EyeToFaceLoss(config, vgg)
    g = torch.Generator().manual_seed(1)
    eyes = torch.randint(0, 256, (batch, 3, 32, 32), dtype=torch.uint8, generator=g).to(accelerator.device)
    faces = torch.randint(0, 256, (batch, 3, 128, 128), dtype=torch.uint8, generator=g).to(accelerator.device)
    if criterion.feature is not None:
        criterion.feature.vgg.to(accelerator.device, memory_format=torch.channels_last)
        criterion.feature.to(accelerator.device)
        fresh = EyeToFace().to(accelerator.device).train()
        with torch.no_grad(), accelerator.autocast():
            criterion.feature.initialise(fresh(to_unit(eyes)).float(), to_unit(faces))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    model, optimizer = accelerator.prepare(model, optimizer)
    model.train()

    def step():
        eye = to_unit(eyes).contiguous(memory_format=torch.channels_last)
        face = to_unit(faces)
        with accelerator.autocast():
            terms = criterion(model(eye).float(), face)
        accelerator.backward(terms["loss"])
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return terms["loss"]

    return step, flops, counted, accelerator


def loader_ms_per_batch(batch: int, batches: int = 30) -> dict:
    """The trainer's DataLoader (shuffled EyeFacePairs, num_workers=0) alone: ms to collate one batch on CPU."""
    from eye2face_hub.data import EyeFacePairs

    pairs = EyeFacePairs.__new__(EyeFacePairs)  # decoded tensors as EyeFacePairs holds them, without a dataset
    g = torch.Generator().manual_seed(2)
    n = batch * batches
    pairs.eyes = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g)
    pairs.faces = torch.randint(0, 256, (n // 2, 3, 128, 128), dtype=torch.uint8, generator=g)
    loader = torch.utils.data.DataLoader(pairs, batch_size=batch, shuffle=True, drop_last=True)
    times, t = [], time.perf_counter()
    for _ in loader:
        times.append(time.perf_counter() - t)
        t = time.perf_counter()
    return common.stats(times, 1000)


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def measure(preset: str, batch: int, steps: int, warmup: int, device, mixed_precision: str) -> dict:
    step, flops, counted, accelerator = build(preset, batch, device, mixed_precision)
    for _ in range(warmup):
        step().item()
    sync(device)
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        loss = step()
        loss.item()  # the step is done (host sync), as at the trainer's logging steps
        sync(device)
        times.append(time.perf_counter() - t)
    st = common.stats(times, 1000)
    samples_per_s = batch / (st["median"] / 1000)
    r = {
        "preset": preset,
        "batch": batch,
        "mixed_precision": accelerator.mixed_precision,
        "device": str(device),
        "step_ms": st,
        "samples_per_s": round(samples_per_s, 2),
        "flops": flops,
        "flop_counter_per_sample": counted,
        "achieved_tflops": round(samples_per_s * flops["per_training_sample"] / 1e12, 4),
        "paper_recipe_hours_at_this_rate": round(PAPER_SAMPLES / samples_per_s / 3600, 2),
    }
    if device.type == "cuda":
        name = torch.cuda.get_device_name(0)
        peak = next((v for k, v in common.PEAKS.items() if k in name), None)
        r["gpu"] = name
        r["peak_flops"] = peak
        if peak:
            r["mfu"] = round(samples_per_s * flops["per_training_sample"] / peak, 4)
        r["paper_recipe_minutes"] = round(PAPER_SAMPLES / samples_per_s / 60, 2)
        r["target_minutes"] = 10
        r["target_met"] = r["paper_recipe_minutes"] < 10
    return r


def counted_flops(preset: str, vgg) -> int | None:
    """FLOPs of one sample's training step (forward and backward) by torch.utils.flop_counter: a cross-check."""
    try:
        from torch.utils.flop_counter import FlopCounterMode

        from eye2face_hub import EyeToFace

        g = EyeToFace().train()
        eye, face = torch.rand(1, 3, 32, 32), torch.rand(1, 3, 128, 128)
        with FlopCounterMode(display=False) as counter:
            pred = g(eye)
            if vgg is not None:
                with torch.no_grad():
                    target = vgg(face, FEATURE_LAYERS)
                loss = sum((p - t).abs().mean() for p, t in zip(vgg(pred, FEATURE_LAYERS), target))
            else:
                loss = (pred - face).abs().mean()
            loss.backward()
        return int(counter.get_total_flops())
    except Exception:  # the cross-check is optional
        return None


def h200_projection(flops_per_sample: float) -> dict:
    """Without a GPU here: the paper recipe's wall time on one H200 at assumed MFUs (a projection, not a measurement)."""
    total = PAPER_SAMPLES * flops_per_sample
    out = {"peak_flops": common.H200_BF16_DENSE_PEAK, "peak_source": "NVIDIA H200 SXM datasheet, dense BF16 989 TFLOP/s",
           "total_flops": total}
    for mfu in (0.05, 0.1, 0.2, 0.3, 0.4):
        out[f"minutes_at_mfu_{mfu:g}"] = round(total / (common.H200_BF16_DENSE_PEAK * mfu) / 60, 2)
    out["mfu_needed_for_10_minutes"] = round(total / (common.H200_BF16_DENSE_PEAK * 600), 4)
    return out


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--presets", nargs="+", default=["l1", "feature"], choices=["l1", "feature"])
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--steps", type=int, default=None, help="timed steps (default: 8 for l1, 3 for feature on CPU; 50 on GPU)")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--mixed-precision", default="bf16", choices=["no", "bf16", "fp16"])
    p.add_argument("--cpu", action="store_true", help="measure on CPU even where there is a GPU")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    threads = common.set_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() and not args.cpu else "cpu")
    runs = []
    for preset in args.presets:
        steps = args.steps or (50 if device.type == "cuda" else {"l1": 8, "feature": 3}[preset])
        runs.append(measure(preset, args.batch_size, steps, args.warmup if device.type == "cpu" else 10, device,
                            args.mixed_precision))
    result = {"bench": "train", "machine": common.machine_info(threads), "paper_recipe_samples": PAPER_SAMPLES, "runs": runs,
              "dataloader_ms_per_batch": loader_ms_per_batch(args.batch_size)}
    if device.type != "cuda":
        result["h200_projection_not_measured"] = {
            r["preset"]: h200_projection(r["flops"]["per_training_sample"]) for r in runs
        }
    common.write_json(result, args.out)
    return result


if __name__ == "__main__":
    main()
