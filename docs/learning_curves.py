"""Learning curves of training runs, from their TensorBoard logs: validation metrics per epoch, and training loss.

    python docs/learning_curves.py --run feature=~/eye2face-runs/feature --run l1=~/eye2face-runs/l1 \
        --out docs/learning-curves.png
    python docs/learning_curves.py --gan --run research=~/eye2face-runs/wgan-gp-research \
        --run wgan-gp=~/eye2face-runs/wgan-gp --out docs/gan-curves.png

Reads every event file under RUN/logs (a resumed run appends new files there) and plots val/* per epoch and
train/loss per step (steps converted to epochs with the run's steps per epoch). `--gan` plots a critic's health
instead: the Wasserstein estimate, the gradient penalty and the generator's adversarial loss (moving medians),
with validation L1. Needs matplotlib (`pip install -e ".[docs]"`).
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path


def scalars(run: Path) -> dict[str, dict[int, float]]:
    """tag -> {step: value} over all event files of a run (a later file wins for a repeated step)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out: dict[str, dict[int, float]] = {}
    for events in sorted((run / "logs").rglob("events.out.tfevents.*"), key=lambda p: p.stat().st_mtime):
        acc = EventAccumulator(str(events), size_guidance={"scalars": 0})
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            out.setdefault(tag, {}).update({e.step: e.value for e in acc.Scalars(tag)})
    return out


def steps_per_epoch(tags: dict[str, dict[int, float]], default: int) -> int:
    """Optimizer steps per epoch, as the trainer counted them: the step of the run's first validation (after
    epoch 1), whatever its batch size, processes or critic steps."""
    return min(tags.get("val/l1", {default: None}))


def moving_median(values: list[float], window: int) -> list[float]:
    return [statistics.median(values[max(0, i - window + 1):i + 1]) for i in range(len(values))]


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", action="append", required=True, metavar="NAME=FOLDER", help="a training output folder")
    p.add_argument("--steps-per-epoch", type=int, default=323, help="when the run has no validation yet")
    p.add_argument("--gan", action="store_true", help="plot the critic's health instead (runs with a critic)")
    p.add_argument("--out", default="docs/learning-curves.png")
    args = p.parse_args(argv)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = {name: Path(folder).expanduser() for name, folder in (r.split("=", 1) for r in args.run)}
    data = {}
    for name, folder in runs.items():
        tags = scalars(folder)
        data[name] = tags, steps_per_epoch(tags, args.steps_per_epoch)
    if args.gan:
        panels = [("critic/wasserstein", "critic: Wasserstein estimate"), ("critic/gradient_penalty", "critic: gradient penalty"),
                  ("train/adversarial", "generator: adversarial loss"), ("val/l1", "validation L1")]
    else:
        panels = [("val/l1", "validation L1"), ("val/l2", "validation L2"), ("val/feature", "validation feature loss"),
                  ("train/loss", "training loss (own objective)")]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.8))
    for ax, (tag, title) in zip(axes, panels):
        for name, (tags, per_epoch) in data.items():
            if tag in tags:
                steps = sorted(tags[tag])
                values = [tags[tag][s] for s in steps]
                if args.gan and not tag.startswith("val/"):  # per-step GAN terms swing widely: show their trend
                    values = moving_median(values, max(1, len(values) // 50))
                ax.plot([s / per_epoch for s in steps], values,
                        marker="o" if tag.startswith("val/") else None, markersize=3, label=name)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("epoch")
        if tag in ("critic/wasserstein", "train/adversarial"):  # signed, and swinging over decades
            ax.set_yscale("symlog")
        elif tag == "critic/gradient_penalty":  # positive, spikes of hundreds over a baseline near 1
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(runs), fontsize=9, frameon=False)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
