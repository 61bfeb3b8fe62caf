"""The README's walk-through, run verbatim: every block marked `<!-- walkthrough -->`, in order,
in a copy of the files it uses, with the repository's venv first on PATH (as after
`source .venv/bin/activate`)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from cropshard.reader import metadata

REPO = Path(__file__).resolve().parents[2]
MARKER = "<!-- walkthrough -->"


def walkthrough_blocks(markdown: str) -> list[tuple[str, str]]:
    """(language, code) of every fenced block right after the marker."""
    return re.findall(rf"^{re.escape(MARKER)}\n```(\w+)\n(.*?)^```", markdown, flags=re.S | re.M)


def shell_commands(block: str) -> list[str]:
    """One command per line, backslash continuations joined."""
    return [command.strip() for command in block.replace("\\\n", " ").splitlines() if command.strip() and not command.startswith("#")]


def test_blocks_are_found() -> None:
    text = f"x\n{MARKER}\n```bash\na \\\n  b\nc\n```\n```bash\nnot marked\n```\n{MARKER}\n```python\nprint(1)\n```\n"
    blocks = walkthrough_blocks(text)
    assert blocks == [("bash", "a \\\n  b\nc\n"), ("python", "print(1)\n")]
    assert shell_commands(blocks[0][1]) == ["a    b", "c"]


@pytest.mark.slow  # the whole walk-through: builds, inspect, compare, each a fresh process
def test_the_readme_walkthrough_runs_as_written(tmp_path: Path) -> None:
    blocks = walkthrough_blocks((REPO / "README.md").read_text(encoding="utf-8"))
    assert [language for language, _ in blocks] == ["bash", "python", "bash", "bash", "bash"]
    shutil.copytree(REPO / "docs" / "examples", tmp_path / "docs" / "examples")
    env = {**os.environ, "PATH": f"{REPO / '.venv' / 'bin'}{os.pathsep}{os.environ['PATH']}", "TMPDIR": str(tmp_path)}
    outputs = []
    for language, code in blocks:
        runs = [["bash", "-c", command] for command in shell_commands(code)] if language == "bash" else [["python", "-c", code]]
        for argv in runs:
            done = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1200)
            assert done.returncode == 0, f"{argv[-1]}\nexit {done.returncode}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
            outputs.append(done.stdout)
    built, objects = (metadata.load_info(str(tmp_path / "demo" / name)) for name in ("center128", "objects"))
    assert built.num_inputs == 24 and built.num_images_written == 24 and set(built.splits) == {"train", "validation"}
    assert objects.num_inputs == 15 and objects.num_images_written == 15 and objects.image_shape == (96, 96, 3)
    read = next(out for out in outputs if "validation batch" in out)
    assert "train batch (8, 112, 112, 3)" in read and ", 128, 128, 3) uint8" in read
    assert any("verify: OK" in out for out in outputs) and (tmp_path / "demo" / "center128.png").exists()
    compared = json.loads((tmp_path / "demo" / "compare" / "compare.json").read_text())
    assert [row["name"] for row in compared["variants"]] == ["precrop-jpeg", "full-jpeg"]
