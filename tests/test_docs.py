"""The README and docs/ as a newcomer uses them: every Python snippet in the README runs as written, every
`eye2face` and training command in them parses with today's flags, every local link leads somewhere, the README's
test command is what CI runs, and docs/app.md lists the log's outcomes the app really writes."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys

import pytest

from eye2face_app.refusals import KINDS
from eye2face_hub.cli import build_parser
from tests.app_fixtures import ROOT, served_app

README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md")), ROOT / "bench" / "README.md"]
BUNDLED = ROOT / "weights"


def blocks(path, language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", path.read_text(), flags=re.S | re.M)


def commands(path, program: str) -> list[list[str]]:
    """Each `program ...` command in the page's shell blocks, its arguments split as a shell would."""
    found = []
    for block in blocks(path, "bash"):
        for line in block.replace("\\\n", " ").splitlines():
            for part in line.split("&&"):
                words = shlex.split(part)
                if program in words and "..." not in words:
                    found.append(words[words.index(program) + 1 :])
    return found


def test_the_readme_fits_a_screen_or_two_and_keeps_the_space_front_matter():
    text = README.read_text()
    assert text.startswith("---\n") and "\nsdk: gradio\n" in text.split("\n---\n")[0] and "app_file: app.py" in text
    assert len(text.splitlines()) <= 200


def test_the_readme_test_command_is_what_ci_runs():
    (install_and_test,) = [b.strip() for b in blocks(README, "bash") if "pytest" in b]
    assert install_and_test in (ROOT / ".ci" / "run").read_text()


def test_every_local_link_leads_to_a_file():
    missing = []
    for page in PAGES:
        for target in re.findall(r"\]\(([^)#\s]+)\)|src=\"([^\"]+)\"", page.read_text()):
            target = next(t for t in target if t)
            if not re.match(r"https?:", target) and not (page.parent / target).exists():
                missing.append(f"{page.relative_to(ROOT)}: {target}")
    assert not missing, missing


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_eye2face_and_training_commands_parse_with_todays_flags(page):
    import train_accelerate

    for args in commands(page, "eye2face"):
        build_parser().parse_args(args)  # exits (SystemExit) on an unknown flag or choice
    for args in commands(page, "train_accelerate.py"):
        train_accelerate.parse_args(args)


def test_the_log_outcomes_docs_list_are_the_ones_the_app_writes():
    text = (ROOT / "docs" / "app.md").read_text()
    listed = re.findall(r"^- (.+?): ", text.split("**Logs.**")[1].split("\n## ")[0], flags=re.M)
    documented = {kind.strip("`") for line in listed for kind in re.split(r",\s*", line)}
    assert documented == set(KINDS)


def test_the_readme_python_snippets_run_as_written(tmp_path):
    if not all((BUNDLED / f"eye2face-{name}" / "model.safetensors").is_file() for name in ("l1", "feature", "two-eyes")):
        pytest.skip("the README's snippets use the bundled weights, which this checkout does not have")
    snippets = blocks(README, "python")
    assert len(snippets) >= 2, "the README shows the library and the API"
    with served_app(BUNDLED) as url:
        for code in snippets:
            code = code.replace("http://127.0.0.1:7860/", url)
            run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=600)
            assert run.returncode == 0, f"{code}\n{run.stderr[-3000:]}"
