"""Training step throughput, side by side in one process: the step before issue 10, today's step eager and
compiled, and the step's own convolutions run alone.

    python -m bench.bench_train --out /tmp/train.json [--presets l1 feature] [--repeat 5] [--no-compile]
                                [--variants compiled] [--profile 3]

The step is eye2face_hub.training.TrainingStep, the trainer's: uint8 batch of 64 -> [0,1] channels_last, bf16
autocast, generator, loss (L1; or VGG19 feature loss on layers 0-11 + std loss), backward, Adam step, on random
pixels. Each round runs every variant once in rotated order; figures are medians and ratios of medians.
- before: the trainer's step before issue 10 (commit 16abdc8), the baseline: eager, per-layer
  (p.float() - t.float()).abs().mean() under autograd, max_pool2d, the real face in NCHW.
- convolutions alone: every Conv2d/ConvTranspose2d of the step with its shapes, bf16, channels_last, forward and the
  backward the step needs (generator: input and weight gradients; VGG on the generated face: input gradient; on the
  real face: forward only). The step's time over this is how close it runs to the machine's limit.
- loss_relative_difference: |loss(before) - loss(compiled)| / loss(before) on the first batch, same weights.
- minor_page_faults_per_step: the process's minor page faults per call of each variant (what the allocator costs;
  see bench_allocator.py).
- profile (--profile N): the fastest step's operators by self CPU time over N steps (torch.profiler), with their
  share of the step: where the time goes beyond the convolutions.
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
from eye2face_hub.losses import EyeToFaceLoss, LossConfig, l1, std_loss
from eye2face_hub.model import EyeToFace
from eye2face_hub.training import TrainingStep
from eye2face_hub.vgg import load_vgg19

FEATURE_LAYERS = list(range(12))  # the shared VGG weights cover layers 0-11


def before_step(model, criterion, optimizer):
    """The pre-issue-10 trainer step (baseline only)."""
    c, f = criterion.config, criterion.feature

    def step(eyes, faces):
        eye = eyes.float().div(255).contiguous(memory_format=torch.channels_last)
        face = faces.float().div(255)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            pred = model(eye).float()
            loss = c.l1_weight * l1(pred, face) if c.l1_weight else 0
            if f is not None:  # eager: the VGG's pools run max_pool2d, as nn.MaxPool2d did
                with torch.no_grad():
                    target = f.vgg(face, f.layers)
                layer = torch.stack([(p.float() - t.float()).abs().mean() for p, t in zip(f.vgg(pred, f.layers), target)])
                loss = loss + c.feature_weight * (f.weights * layer / f.l_initial).sum()
            if c.std_weight:
                loss = loss + c.std_weight * std_loss(pred, face)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return {"loss": loss}

    return step


def convolutions_alone(model: nn.Module, vgg, batch: int):
    """A callable that runs the step's convolutions only (see the module docstring)."""
    jobs = []  # (module, its input's shape, (input gradient?, weight gradient?))

    def collect(net, run, grads):
        handles = [m.register_forward_hook(lambda m, x, y, g=grads: jobs.append((m, x[0].shape, g)))
                   for m in net.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
        with torch.no_grad():
            run()
        for h in handles:
            h.remove()

    collect(model, lambda: model(torch.rand(batch, 3, 32, 32)), (True, True))
    if vgg is not None:
        collect(vgg, lambda: vgg(torch.rand(batch, 3, 128, 128), FEATURE_LAYERS), (True, False))
        collect(vgg, lambda: vgg(torch.rand(batch, 3, 128, 128), FEATURE_LAYERS), (False, False))
    cl, bf = torch.channels_last, torch.bfloat16
    prepared = []
    for m, shape, (input_grad, weight_grad) in jobs:
        x = torch.randn(shape).to(bf).contiguous(memory_format=cl).requires_grad_(input_grad)
        w = m.weight.detach().to(bf).contiguous(memory_format=cl).requires_grad_(weight_grad)
        conv = F.conv_transpose2d if isinstance(m, nn.ConvTranspose2d) else F.conv2d
        prepared.append((conv, x, w, m.stride, m.padding, input_grad or weight_grad))

    def run():
        for conv, x, w, stride, padding, backward in prepared:
            if backward:
                y = conv(x, w, None, stride, padding)
                y.backward(torch.ones_like(y))
            else:
                with torch.no_grad():
                    conv(x, w, None, stride, padding)

    return run, len(jobs)


def compiled_graph_name(key: str, graphs: list[str]) -> str:
    """torch.compile's graphs profile as '## Call CompiledFxGraph <hash> ##': name them by what they hold."""
    if key not in graphs:
        return key
    return f"compiled graph {graphs.index(key) + 1} of {len(graphs)} (the fused non-convolution ops, fwd or bwd)"


def profile(step, eyes, faces, steps: int, top: int = 12) -> dict:
    """The step's operators by self CPU time over `steps` calls: ms per step and share of the profiled time."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step(eyes, faces)["loss"].item()
    events = [e for e in prof.key_averages() if e.self_cpu_time_total > 0]
    graphs = [e.key for e in events if e.key.startswith("## Call CompiledFxGraph")]
    total = sum(e.self_cpu_time_total for e in events)
    events.sort(key=lambda e: e.self_cpu_time_total, reverse=True)
    conv_share = sum(e.self_cpu_time_total for e in events if "conv" in e.key) / total
    return {"steps": steps, "self_cpu_ms_per_step": round(total / 1000 / steps, 1),
            "convolution_share": round(conv_share, 3),
            "top": [{"op": compiled_graph_name(e.key, graphs), "self_ms_per_step": round(e.self_cpu_time_total / 1000 / steps, 2),
                     "share": round(e.self_cpu_time_total / total, 3), "calls_per_step": e.count // steps}
                    for e in events[:top]]}


def measure(preset: str, batch: int, repeat: int, variants: list[str], profile_steps: int = 0) -> dict:
    config = LossConfig.from_preset(preset, feature_layers=FEATURE_LAYERS, vgg_weights=str(common.VGG_FILE))
    vgg = load_vgg19(config.vgg_weights, max_layer=11).to(memory_format=torch.channels_last) if config.uses_vgg else None
    criterion = EyeToFaceLoss(config, vgg)
    g = torch.Generator().manual_seed(1)
    eyes = torch.randint(0, 256, (batch, 3, 32, 32), dtype=torch.uint8, generator=g)
    faces = torch.randint(0, 256, (batch, 3, 128, 128), dtype=torch.uint8, generator=g)
    if criterion.feature is not None:
        criterion.feature.set_up(eyes, faces, build_generator=EyeToFace, seed=0, mixed_precision="bf16")
    torch.manual_seed(0)
    start = EyeToFace().to(memory_format=torch.channels_last).train()

    def fresh():  # model, criterion, optimizer: the same start for every variant
        model = copy.deepcopy(start)
        return model, criterion, torch.optim.Adam(model.parameters(), lr=1e-3)

    build = {"before": lambda: before_step(*fresh()),
             "eager": lambda: TrainingStep(*fresh(), mixed_precision="bf16"),
             "compiled": lambda: TrainingStep(*fresh(), mixed_precision="bf16", compile=True)}
    steps = {name: build[name]() for name in variants}
    first_loss, compile_s = {}, None
    for name, step in steps.items():  # the first call: same weights, same batch; compiles
        t = time.perf_counter()
        first_loss[name] = step(eyes, faces)["loss"].item()
        if name == "compiled":
            compile_s = round(time.perf_counter() - t, 1)
    fns = {name: (lambda s=step: s(eyes, faces)["loss"].item()) for name, step in steps.items()}
    fns["convolutions_alone"], n_convs = convolutions_alone(start, vgg, batch)
    faults = dict.fromkeys(fns, 0)

    def counted(name, fn):  # minor page faults per variant (the warm-up round included)
        def call():
            before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            fn()
            faults[name] += resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
        return call

    times = common.interleaved({n: counted(n, fn) for n, fn in fns.items()}, repeat=repeat, warmup=1)
    ms = {name: common.stats(t, 1000) for name, t in times.items()}
    median = {name: s["median"] for name, s in ms.items()}
    fastest = min((n for n in steps if n != "before"), key=median.get, default="before")
    r = {
        "preset": preset, "batch": batch, "mixed_precision": "bf16", "step_ms": ms,
        "samples_per_s": {n: round(batch / (m / 1000), 2) for n, m in median.items()},
        "speedup_over_before": ({n: round(median["before"] / median[n], 2) for n in steps if n != "before"}
                                if "before" in steps else {}),
        "step_over_convolutions_alone": {n: round(median[n] / median["convolutions_alone"], 2) for n in steps},
        "convolutions": n_convs, "first_batch_loss": first_loss, "fastest": fastest, "compile_s": compile_s,
        "minor_page_faults_per_step": {n: round(f / (repeat + 1)) for n, f in faults.items()},
    }
    if profile_steps:
        r["profile"] = {"variant": fastest} | profile(steps[fastest], eyes, faces, profile_steps)
    if {"compiled", "before"} <= first_loss.keys():
        r["loss_relative_difference"] = abs(first_loss["compiled"] - first_loss["before"]) / abs(first_loss["before"])
    return r


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--presets", nargs="+", default=["l1", "feature"], choices=["l1", "feature"])
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--repeat", type=int, default=5, help="timed rounds (each runs every variant once)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: BENCH_THREADS, else all cores)")
    p.add_argument("--no-compile", dest="compile", action="store_false")
    p.add_argument("--variants", nargs="+", choices=["before", "eager", "compiled"], default=None,
                   help="steps to time beside the convolutions alone (default: all; compiled unless --no-compile)")
    p.add_argument("--profile", type=int, default=0, metavar="N", help="profile the fastest step over N steps")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    threads = args.threads or int(os.environ.get("BENCH_THREADS", "0")) or os.cpu_count() or 1
    torch.set_num_threads(threads)
    variants = args.variants or ["before", "eager"] + (["compiled"] if args.compile else [])
    runs = [measure(preset, args.batch_size, args.repeat, variants, args.profile) for preset in args.presets]
    result = {"bench": "train", "machine": common.machine_info(threads), "runs": runs}
    common.write_json(result, args.out)
    return result


if __name__ == "__main__":
    main()
