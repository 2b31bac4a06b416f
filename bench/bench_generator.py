"""Generator throughput: images/s of EyeToFace (the bundled feature model) at batch 1 and 64, eager fp32 against the
pipeline's path, side by side in one process: each variant's ratio to eager fp32 and largest absolute difference
from it on the same input (outputs are in [0,1]; 1/255 = 0.0039). Variants: eager_fp32 (no_grad, NCHW: the
baseline); inference_mode (as EyeToFacePipeline.generate); channels_last (NHWC weights and input, as the pipeline).

    python -m bench.bench_generator --out /tmp/generator.json [--threads 1 2] [--batches 1 64]
"""

import argparse
import copy

import torch
from torch.utils.flop_counter import FlopCounterMode

from bench import common
from eye2face_hub import EyeToFace

CL = torch.channels_last


def run(batch: int, repeat: int, threads: int, flops: int) -> dict:
    torch.set_num_threads(threads)
    model = EyeToFace.from_pretrained(str(common.WEIGHTS / "eye2face-feature")).eval()  # trained weights: real numerics
    x = torch.rand(batch, 3, 32, 32, generator=torch.Generator().manual_seed(batch))
    model_cl, x_cl = copy.deepcopy(model).to(memory_format=CL), x.contiguous(memory_format=CL)

    def call(m, inp, mode=torch.inference_mode):
        def f():
            with mode():
                return m(inp)
        return f

    fns = {"eager_fp32": call(model, x, torch.no_grad), "inference_mode": call(model, x),
           "channels_last": call(model_cl, x_cl)}
    ref = fns["eager_fp32"]()
    max_diff = {name: float((f() - ref).abs().max()) for name, f in fns.items()}
    inner = 5 if batch == 1 else 1
    samples = common.interleaved(fns, repeat=repeat, warmup=2, inner=inner)
    base = common.stats(samples["eager_fp32"], 1000)["median"]
    result = {}
    for name, s in samples.items():
        st = common.stats(s, 1000)
        result[name] = {"ms_per_batch": st, "images_per_s": round(batch / (st["median"] / 1000), 1),
                        "gflop_per_s": round(batch * flops / (st["median"] / 1000) / 1e9, 1),
                        "speedup_vs_eager_fp32": round(base / st["median"], 2), "max_abs_diff_vs_eager_fp32": max_diff[name]}
    fastest = max(result, key=lambda n: result[n]["images_per_s"])
    return {"batch": batch, "torch_threads": threads, "repeat": repeat, "inner": inner, "variants": result,
            "fastest": fastest, "fastest_speedup_vs_eager_fp32": result[fastest]["speedup_vs_eager_fp32"]}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="torch thread counts (the app uses 1)")
    p.add_argument("--batches", type=int, nargs="+", default=[1, 64])
    p.add_argument("--repeat", type=int, default=None, help="timed rounds per variant (default 30 at batch 1, 6 at 64)")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    with FlopCounterMode(display=False) as counter, torch.no_grad():  # forward FLOPs (2 x multiply-adds) of one image
        EyeToFace().eval()(torch.rand(1, 3, 32, 32))
    flops = int(counter.get_total_flops())
    result = {"bench": "generator", "machine": common.machine_info(args.threads), "flops_per_image": flops,
              "runs": [run(b, args.repeat or (30 if b == 1 else 6), t, flops)
                       for b in args.batches for t in args.threads]}
    common.write_json(result, args.out)
    return result


if __name__ == "__main__":
    main()
