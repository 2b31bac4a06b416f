"""The one way tests run the trainer: a subprocess, as users launch it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from .paths import REPO

TRAIN = str(REPO / "train_accelerate.py")
ACCELERATE = str(Path(sys.executable).with_name("accelerate"))


def env(**extra) -> dict:
    return {**os.environ, "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", **extra}


def train_command(data, out, *extra, launcher=(sys.executable,)) -> list[str]:
    # --no-compile: compiling costs 10-60 s per process; tests/test_training_step.py covers the compiled step.
    return [*launcher, TRAIN, "--data", str(data), "--output-dir", str(out), "--report-to", "none",
            "--logging-steps", "1", "--no-compile", *extra]


def train(data, out, *extra, launcher=(sys.executable,), **env_vars) -> str:
    """Run the trainer to completion; its output (stdout + stderr); fails the test on a non-zero exit."""
    proc = subprocess.run(train_command(data, out, *extra, launcher=launcher), cwd=REPO, capture_output=True,
                          text=True, timeout=600, env=env(**env_vars))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return proc.stdout + proc.stderr
