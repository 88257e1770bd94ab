"""`mlmm report`: the HTML page and markdown tables from a real results database of real cells."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

pytest.importorskip("matplotlib", reason="the report's figures need matplotlib (extra `report`; CI installs it)")

from matplotlib.image import imread  # noqa: E402

from mlmm.bench import load_cells, parse_spec  # noqa: E402
from mlmm.bench.runner import run_bench  # noqa: E402
from mlmm.cli import main  # noqa: E402

SPEC = """
name: report-test
datasets: [basicmotions]
methods: [masked-mean, zero-fill]
scenarios: [{protocol: entry, rates: [0, 0.3]}]
seeds: [0, 1]
train: {max_epochs: 1}
subsets: true
reference: zero-fill
"""


@pytest.fixture(scope="session")
def results_db(tmp_path_factory):
    """A results database written by the real bench runner: 2 methods x 2 rates x 2 seeds, one epoch each."""
    db = tmp_path_factory.mktemp("bench") / "results.sqlite"
    run_bench(parse_spec(SPEC, "report-test.yaml"), db, spec_text=SPEC, workers=1, threads=1)
    return db


@pytest.fixture(scope="session")
def report_dir(results_db, tmp_path_factory):
    """`mlmm report DB -o DIR` run once (the reference comes from the spec stored in the database)."""
    out = tmp_path_factory.mktemp("report")
    assert main(["report", str(results_db), "-o", str(out)]) == 0
    return out


def test_report_from_the_database_via_the_cli(report_dir) -> None:
    out = report_dir
    page = (out / "index.html").read_text()
    md = (out / "report.md").read_text()
    # self-contained: every image inlined, nothing fetched
    assert not re.search(r"""(src|href)=['"](?!data:)""", page)
    images = re.findall(r"src='data:image/png;base64,([A-Za-z0-9+/=]+)'", page)
    # 2 rate curves (train = test, and ... none other) + 2 heatmaps + 1 scatter + 2 reliability + 1 realised
    assert len(images) >= 7
    for data in images:
        assert imread(io.BytesIO(base64.b64decode(data)), format="png").shape[0] > 50
    for heading in ("Leaderboard per dataset and scenario", "Robustness", "Accuracy per modality subset",
                    "Accuracy vs cost", "Calibration", "Realised missingness", "Missingness protocols"):
        assert heading in page and heading in md
    assert page.count("<table>") >= 8
    # the reference came from the spec, and the gap is measured against it
    assert "| masked-mean | 0, 0.3" in md and "zero-fill" in md
    assert "accelerometer+gyroscope" in md and "ECE %" in md
    assert "The rate is the fraction of missing (sample, modality) entries" in page  # the protocol in words


def test_report_gaps_use_the_spec_reference(results_db, report_dir) -> None:
    cells = load_cells(results_db)
    assert len(cells) == 8 and all("calibration" in c and "efficiency" in c for c in cells)
    md = (report_dir / "report.md").read_text()
    row = next(line for line in md.splitlines() if line.startswith("| masked-mean | 0, 0.3"))
    cols = [c.strip() for c in row.strip("|").split("|")]
    assert cols[4] == "zero-fill" and cols[5] != "-"  # gap at 0.3 measured against the reference


def test_report_from_jsonl_and_bad_input(results_db, tmp_path, capsys) -> None:
    jsonl = tmp_path / "cells.jsonl"
    # a JSONL file of cells (one scenario's, to keep it quick)
    cells = [c for c in load_cells(results_db) if c["test_rate"] == 0.3]
    jsonl.write_text("\n".join(json.dumps(c) for c in cells) + "\n")
    assert main(["report", str(jsonl), "-o", str(tmp_path / "r"), "--reference", "zero-fill"]) == 0
    assert (tmp_path / "r" / "index.html").stat().st_size > 10_000
    capsys.readouterr()
    assert main(["report", str(tmp_path / "missing.sqlite"), "-o", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "missing.sqlite" in err
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"dataset": "d"}\n{oops\n')
    assert main(["report", str(bad), "-o", str(tmp_path / "y")]) == 2
    assert "line 2" in capsys.readouterr().err
    nokey = tmp_path / "nokey.json"
    nokey.write_text(json.dumps([{"method": "m", "seed": 0, "metrics": {}}]))
    assert main(["report", str(nokey), "-o", str(tmp_path / "z")]) == 2
    assert "'dataset'" in capsys.readouterr().err


# ------------------------------------------------------------------ a real headless browser

ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"


def _browser() -> str | None:
    return next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)


def _chromium(browser: str, profile: Path, *args: str) -> subprocess.CompletedProcess:
    """Run headless chromium; console messages of the page go to stderr as ``...:CONSOLE...`` lines."""
    cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--mute-audio",
           f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=180)


def _console(result: subprocess.CompletedProcess) -> list[str]:
    return [line for line in result.stderr.splitlines() if ":CONSOLE" in line]


@pytest.mark.skipif(_browser() is None, reason="no chromium on PATH (Debian: apt-get install chromium; .ci/run does)")
def test_report_renders_in_headless_chromium(report_dir, tmp_path) -> None:
    browser = _browser()
    url = (report_dir / "index.html").as_uri()
    page = (report_dir / "index.html").read_text()

    # The console check is not vacuous: a page that logs an error is caught.
    control = tmp_path / "control.html"
    control.write_text("<html><body><script>console.error('control-error')</script></body></html>")
    assert any("control-error" in line for line in _console(_chromium(browser, tmp_path / "p0", "--dump-dom",
                                                                    control.as_uri())))

    dom = _chromium(browser, tmp_path / "p1", "--virtual-time-budget=5000", "--dump-dom", url)
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert _console(dom) == []  # no console error (nor a blocked or missing resource)
    rendered = dom.stdout
    assert rendered.count("<table>") == page.count("<table>") >= 8
    assert rendered.count('src="data:image/png;base64,') == page.count("src='data:image/png;base64,") >= 7

    shot = tmp_path / "report.png"
    result = _chromium(browser, tmp_path / "p2", "--hide-scrollbars", "--window-size=1280,3600",
                       "--virtual-time-budget=5000", f"--screenshot={shot}", url)
    assert result.returncode == 0 and shot.exists(), result.stderr[-2000:]
    pixels = imread(shot)[..., :3]
    assert pixels.shape[:2] == (3600, 1280)
    # Plots are drawn: a real share of coloured (saturated) pixels, which tables and text never give.
    saturation = pixels.max(axis=2) - pixels.min(axis=2)
    assert (saturation > 0.25).mean() > 0.01
    assert (pixels.mean(axis=2) < 0.5).mean() > 0.005  # dark text / lines, not a blank page
    try:  # keep the screenshot as a test artefact (CI uploads test-artifacts/)
        ARTIFACTS.mkdir(exist_ok=True)
        shutil.copy(shot, ARTIFACTS / "report-screenshot.png")
    except OSError:
        pass
