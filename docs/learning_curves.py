"""Learning curves of training runs, from their TensorBoard logs: validation metrics per epoch, and training loss.

    python docs/learning_curves.py --run feature=~/eye2face-runs/feature --run l1=~/eye2face-runs/l1 \
        --out docs/learning-curves.png

Reads every event file under RUN/logs (a resumed run appends new files there) and plots val/* per epoch and
train/loss per step (steps converted to epochs with the run's steps per epoch). Needs matplotlib
(`pip install -e ".[docs]"`).
"""

from __future__ import annotations

import argparse
import json
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


def steps_per_epoch(run: Path, default: int) -> int:
    config = run / "config.json"
    if config.exists():
        training = json.loads(config.read_text()).get("training") or {}
        if training.get("train_pairs") and training.get("args", {}).get("batch_size"):
            return training["train_pairs"] // (training["args"]["batch_size"] * training.get("processes", 1))
    return default


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", action="append", required=True, metavar="NAME=FOLDER", help="a training output folder")
    p.add_argument("--steps-per-epoch", type=int, default=323, help="when the run has no config.json yet")
    p.add_argument("--out", default="docs/learning-curves.png")
    args = p.parse_args(argv)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = {name: Path(folder).expanduser() for name, folder in (r.split("=", 1) for r in args.run)}
    data = {name: (scalars(folder), steps_per_epoch(folder, args.steps_per_epoch)) for name, folder in runs.items()}
    panels = [("val/l1", "validation L1"), ("val/l2", "validation L2"), ("val/feature", "validation feature loss"),
              ("train/loss", "training loss (own objective)")]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4))
    for ax, (tag, title) in zip(axes, panels):
        for name, (tags, per_epoch) in data.items():
            if tag in tags:
                steps = sorted(tags[tag])
                ax.plot([s / per_epoch for s in steps], [tags[tag][s] for s in steps],
                        marker="o" if tag.startswith("val/") else None, markersize=3, label=name)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.tight_layout()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
