"""Generator throughput: images/s of EyeToFace (the bundled feature model) at batch 1 and 64, eager fp32 against
faster CPU paths, side by side in one process: each variant's ratio to eager fp32 and largest absolute difference
from it on the same input (outputs are in [0,1]; 1/255 = 0.0039). Variants: eager_fp32 (no_grad, NCHW: the
baseline); inference_mode (as EyeToFacePipeline.generate); channels_last (NHWC weights and input, as the pipeline);
channels_last_bnfold (BatchNorm folded into the conv before it); bf16_channels_last[_bnfold] (bf16 autocast, where
the CPU has avx512_bf16 or AMX); compile[_bf16] (torch.compile of the folded channels_last model).

    python -m bench.bench_generator --out /tmp/generator.json [--threads 1 2] [--batches 1 64] [--no-compile]
"""

import argparse
import copy
import time

import torch
from torch.nn.utils.fusion import fuse_conv_bn_eval
from torch.utils.flop_counter import FlopCounterMode

from bench import common
from eye2face_hub import EyeToFace

CL = torch.channels_last


def fold_batchnorm(model: torch.nn.Module) -> torch.nn.Module:
    """An eval copy with each BatchNorm2d folded into the conv before it (exact up to float rounding)."""
    model = copy.deepcopy(model).eval()
    for seq in [m for m in model.modules() if isinstance(m, torch.nn.Sequential)]:
        for i in range(len(seq) - 1):
            conv, bn = seq[i], seq[i + 1]
            if isinstance(conv, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)) and isinstance(bn, torch.nn.BatchNorm2d):
                seq[i] = fuse_conv_bn_eval(conv, bn, transpose=isinstance(conv, torch.nn.ConvTranspose2d))
                seq[i + 1] = torch.nn.Identity()
    return model


def run(batch: int, repeat: int, use_compile: bool, threads: int, flops: int) -> dict:
    torch.set_num_threads(threads)
    model = EyeToFace.from_pretrained(str(common.WEIGHTS / "eye2face-feature")).eval()  # trained weights: real numerics
    x = torch.rand(batch, 3, 32, 32, generator=torch.Generator().manual_seed(batch))
    x_cl = x.contiguous(memory_format=CL)
    model_cl, folded = copy.deepcopy(model).to(memory_format=CL), fold_batchnorm(model).to(memory_format=CL)
    bf16 = torch.cuda.is_available() or bool({"avx512_bf16", "amx_bf16"} & set(common.cpuinfo("flags").split()))

    def call(m, inp, mode=torch.inference_mode, bf16=False):
        def f():
            with mode(), torch.autocast("cpu", torch.bfloat16, enabled=bf16):
                return m(inp)
        return f

    fns = {"eager_fp32": call(model, x, torch.no_grad), "inference_mode": call(model, x),
           "channels_last": call(model_cl, x_cl), "channels_last_bnfold": call(folded, x_cl)}
    if bf16:
        fns["bf16_channels_last"] = call(model_cl, x_cl, bf16=True)
        fns["bf16_channels_last_bnfold"] = call(folded, x_cl, bf16=True)
    if use_compile:
        compiled = torch.compile(copy.deepcopy(folded))
        fns["compile"] = call(compiled, x_cl)
        if bf16:
            fns["compile_bf16"] = call(compiled, x_cl, bf16=True)
    ref = fns["eager_fp32"]().float()
    compile_s, max_diff = {}, {}
    for name, f in fns.items():
        t = time.perf_counter()
        y = f()  # first call: compilation for torch.compile variants
        if name.startswith("compile"):
            compile_s[name] = round(time.perf_counter() - t, 1)
        max_diff[name] = float((y.float() - ref).abs().max())
    inner = 5 if batch == 1 else 1
    samples = common.interleaved(fns, repeat=repeat, warmup=2, inner=inner)
    base = common.stats(samples["eager_fp32"], 1000)["median"]
    result = {}
    for name, s in samples.items():
        st = common.stats(s, 1000)
        result[name] = {"ms_per_batch": st, "images_per_s": round(batch / (st["median"] / 1000), 1),
                        "gflop_per_s": round(batch * flops / (st["median"] / 1000) / 1e9, 1),
                        "speedup_vs_eager_fp32": round(base / st["median"], 2), "max_abs_diff_vs_eager_fp32": max_diff[name]}
        if name in compile_s:
            result[name]["compile_s"] = compile_s[name]
    fastest = max(result, key=lambda n: result[n]["images_per_s"])
    return {"batch": batch, "torch_threads": threads, "repeat": repeat, "inner": inner, "variants": result,
            "fastest": fastest, "fastest_speedup_vs_eager_fp32": result[fastest]["speedup_vs_eager_fp32"]}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="torch thread counts (the app uses 1)")
    p.add_argument("--batches", type=int, nargs="+", default=[1, 64])
    p.add_argument("--repeat", type=int, default=None, help="timed rounds per variant (default 30 at batch 1, 6 at 64)")
    p.add_argument("--no-compile", action="store_true", help="skip torch.compile (slow to compile on a loaded CPU)")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    with FlopCounterMode(display=False) as counter, torch.no_grad():  # forward FLOPs (2 x multiply-adds) of one image
        EyeToFace().eval()(torch.rand(1, 3, 32, 32))
    flops = int(counter.get_total_flops())
    result = {"bench": "generator", "machine": common.machine_info(args.threads), "flops_per_image": flops,
              "runs": [run(b, args.repeat or (30 if b == 1 else 6), not args.no_compile, t, flops)
                       for b in args.batches for t in args.threads]}
    common.write_json(result, args.out)
    return result


if __name__ == "__main__":
    main()
