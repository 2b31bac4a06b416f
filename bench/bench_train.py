"""Training step throughput, side by side in one process: each preset's step, eager and compiled, and the step's
convolutions alone, all in the same interleaved rounds, so that ratios between presets are of one run.

    python -m bench.bench_train --out /tmp/train.json [--presets l1 feature feature-id] [--repeat 5] [--no-compile]

The step is the trainer's TrainingStep: uint8 batch of 64 -> [0,1] channels_last, bf16 autocast (float32 in the
eager-fp32 variant), generator, loss (L1; VGG19 feature loss on layers 0-11 + std loss; feature-id adds FaceNet's
identity term), backward, Adam step, on random pixels. Each round runs every step once in rotated order; figures are
medians and ratios of medians.
- ratio_to_feature: each step over the feature step of its variant (feature-id: what the identity term costs).
- convolutions alone: every Conv2d/ConvTranspose2d of the generator and the VGG with its shapes, bf16, channels_last,
  forward and the backward the step needs (generator: input and weight gradients; VGG on the generated face: input
  gradient; on the real face: forward only). The feature step's time over this is how close it runs to the machine.
- minor_page_faults_per_step: per call of each step (what the allocator costs; see bench_allocator.py).
- bf16_over_fp32: with the eager-fp32 variant, each preset's eager bf16 step over its float32 one; above 1 where this
  CPU emulates bf16 (native_bf16 false: no avx512_bf16, no AMX).
"""

import argparse
import copy
import os
import resource
import time

import torch
import torch.nn.functional as F
from torch import nn

from bench import common
from eye2face_hub.facenet import load_facenet
from eye2face_hub.losses import EyeToFaceLoss, LossConfig
from eye2face_hub.model import EyeToFace
from eye2face_hub.training import TrainingStep, native_bf16
from eye2face_hub.vgg import load_vgg19

FEATURE_LAYERS = list(range(12))  # the shared VGG weights cover layers 0-11
PRESETS = ["l1", "feature", "feature-id"]


def convolutions_alone(model: nn.Module, vgg, batch: int):
    """A callable that runs the feature step's convolutions only (see the module docstring)."""
    jobs = []  # (module, its input's shape, (input gradient?, weight gradient?))

    def collect(net, run, grads):
        handles = [m.register_forward_hook(lambda m, x, y, g=grads: jobs.append((m, x[0].shape, g)))
                   for m in net.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
        with torch.no_grad():
            run()
        for h in handles:
            h.remove()

    collect(model, lambda: model(torch.rand(batch, 3, 32, 32)), (True, True))
    for grads in ((True, False), (False, False)):
        collect(vgg, lambda: vgg(torch.rand(batch, 3, 128, 128), FEATURE_LAYERS), grads)
    prepared = []
    for m, shape, (input_grad, weight_grad) in jobs:
        x = torch.randn(shape).to(torch.bfloat16).contiguous(memory_format=torch.channels_last).requires_grad_(input_grad)
        w = m.weight.detach().to(torch.bfloat16).contiguous(memory_format=torch.channels_last).requires_grad_(weight_grad)
        conv = F.conv_transpose2d if isinstance(m, nn.ConvTranspose2d) else F.conv2d
        prepared.append((conv, x, w, m.stride, m.padding, input_grad or weight_grad))

    def run():
        for conv, x, w, stride, padding, backward in prepared:
            with torch.set_grad_enabled(backward):
                y = conv(x, w, None, stride, padding)
            if backward:
                y.backward(torch.ones_like(y))

    return run


def measure(presets: list[str], batch: int, repeat: int, variants: list[str]) -> dict:
    vgg = load_vgg19(common.VGG_FILE, max_layer=11).to(memory_format=torch.channels_last)
    facenet = load_facenet().to(memory_format=torch.channels_last) if "feature-id" in presets else None
    g = torch.Generator().manual_seed(1)
    eyes = torch.randint(0, 256, (batch, 3, 32, 32), dtype=torch.uint8, generator=g)
    faces = torch.randint(0, 256, (batch, 3, 128, 128), dtype=torch.uint8, generator=g)
    torch.manual_seed(0)
    start = EyeToFace().to(memory_format=torch.channels_last).train()
    steps, compile_s = {}, {}
    for preset in presets:
        config = LossConfig.from_preset(preset, feature_layers=FEATURE_LAYERS, vgg_weights=str(common.VGG_FILE))
        criterion = EyeToFaceLoss(config, vgg if config.uses_vgg else None, facenet if config.uses_facenet else None)
        if criterion.feature is not None:
            criterion.feature.set_up(eyes, faces, build_generator=EyeToFace, seed=0, mixed_precision="bf16")
        for variant in variants:
            model = copy.deepcopy(start)
            precision = "no" if variant == "eager-fp32" else "bf16"
            step = TrainingStep(model, criterion, torch.optim.Adam(model.parameters(), lr=1e-3), mixed_precision=precision,
                                compile=variant == "compiled")
            t = time.perf_counter()
            step(eyes, faces)["loss"].item()  # the first call compiles
            compile_s[f"{preset} {variant}"] = round(time.perf_counter() - t, 1)
            steps[f"{preset} {variant}"] = lambda s=step: s(eyes, faces)["loss"].item()
    steps["convolutions alone"] = convolutions_alone(start, vgg, batch)
    faults = dict.fromkeys(steps, 0)

    def counted(name, fn):  # minor page faults per step (the warm-up round included)
        def call():
            before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            fn()
            faults[name] += resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
        return call

    times = common.interleaved({n: counted(n, fn) for n, fn in steps.items()}, repeat=repeat, warmup=1)
    ms = {name: common.stats(t, 1000) for name, t in times.items()}
    median = {name: s["median"] for name, s in ms.items()}
    return {
        "presets": presets, "batch": batch, "step_ms": ms,
        "mixed_precision": "bf16" + (", eager-fp32 float32" if "eager-fp32" in variants else ""),
        "native_bf16": native_bf16("cpu"),
        "samples_per_s": {n: round(batch / (m / 1000), 2) for n, m in median.items()},
        "ratio_to_feature": {n: round(median[n] / median[f"feature {n.split()[-1]}"], 2)
                             for n in median if n.split()[-1] in variants and f"feature {n.split()[-1]}" in median},
        "step_over_convolutions_alone": {n: round(median[n] / median["convolutions alone"], 2) for n in median
                                         if n.startswith("feature ") and not n.endswith("fp32")},  # bf16 convolutions
        "bf16_over_fp32": {p: round(median[f"{p} eager"] / median[f"{p} eager-fp32"], 2) for p in presets
                           if f"{p} eager" in median and f"{p} eager-fp32" in median},
        "compile_s": compile_s, "minor_page_faults_per_step": {n: round(f / (repeat + 1)) for n, f in faults.items()},
    }


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--presets", nargs="+", default=PRESETS, choices=PRESETS)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--repeat", type=int, default=5, help="timed rounds (each runs every step once)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: BENCH_THREADS, else all cores)")
    p.add_argument("--variants", nargs="+", choices=["eager", "compiled", "eager-fp32"],
                   default=["eager", "compiled"])
    p.add_argument("--no-compile", dest="variants", action="store_const", const=["eager"], help="eager steps only")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    threads = args.threads or int(os.environ.get("BENCH_THREADS", "0")) or os.cpu_count() or 1
    torch.set_num_threads(threads)
    run = measure(args.presets, args.batch_size, args.repeat, args.variants)
    result = {"bench": "train", "machine": common.machine_info(threads), "runs": [run]}
    common.write_json(result, args.out)
    return result


if __name__ == "__main__":
    main()
