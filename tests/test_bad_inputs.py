"""The bad-input suite: every bad input is one clear line, exit code 2 (CLI) or a precise
exception (Python API), naming the culprit, with nothing written and nothing trained.

Each CLI case runs ``mlmm.cli.main`` in process with the working directory set to an empty
folder, and asserts: exit code 2, exactly one line on stderr, starting ``mlmm: error:``
and containing the named culprit, and no file created anywhere in that folder or in the
folder of input files. Each API case asserts the exception type and the named culprit.
Cases are refused before any training (``Trainer.fit`` raises if called), except the few
marked ``trains`` (divergence), which use tiny data and 1-2 epochs. Add a case whenever a
defect is fixed.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from mlmm.cli import main
from mlmm.train import loop

SPEC = """name: t
datasets: [synthetic]
methods: [masked-mean]
scenarios: [{protocol: entry, rates: [0]}]
seeds: [0]
train: {max_epochs: 1}
subsets: false
"""


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    """Bad (and a few good) input files, made once; the suite checks none of them changes."""
    d = tmp_path_factory.mktemp("inputs")
    np.savez(d / "unequal.npz", a=np.zeros((10, 3)), b=np.zeros((8, 2)), y=np.arange(10) % 2)
    np.savez(d / "scalar.npz", a=np.float64(3.0), y=np.arange(10) % 2)
    np.savez(d / "label2d.npz", a=np.random.default_rng(0).random((10, 3)), y=np.zeros((10, 2)))
    (d / "header.csv").write_text("a1,a2,b1,y\n")
    (d / "ok.csv").write_text("a1,a2,b1,y\n" + "".join(f"{i / 7:.3f},{i / 3:.3f},{i % 5 / 2:.3f},{i % 2}\n"
                                                        for i in range(10)))
    (d / "tiny5.csv").write_text("a1,a2,b1,y\n" + "".join(f"{i / 7:.3f},{i / 3:.3f},{i % 5 / 2:.3f},{i % 5}\n"
                                                           for i in range(10)))  # 5 classes of 2 rows
    (d / "x.csv").mkdir()
    (d / "self.yaml").write_text("path: self.yaml\n")
    (d / "alias.yaml").write_text("path: &p ok.csv\nlabel: *p\n")
    (d / "bin.yaml").write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff")
    (d / "data.xyz").write_text("1,2\n")
    (d / "spec.yaml").write_text(SPEC)
    (d / "bomb.yaml").write_text(SPEC + 'a0: &a0 ["lol","lol"]\na1: &a1 [*a0,*a0,*a0]\n')
    (d / "binspec.yaml").write_bytes(b"\xff\xfe\x00name: t\n")
    (d / "bigspec.yaml").write_text(SPEC + "#" * (1 << 20))
    (d / "notyaml.yaml").write_text("name: [unclosed\n")
    (d / "notdb.sqlite").write_text("hello, not a database\n")
    (d / "notjson.json").write_text("{not json\n")
    (d / "a_file").write_text("x")
    (d / "photos").mkdir()  # a table folder whose row 1 names an image file that is not there
    (d / "photos" / "rows.csv").write_text("image,x,y\n,1.0,0\nimg/1.png,2.0,1\n,3.0,1\n")
    (d / "photos" / "dataset.yaml").write_text("table: rows.csv\nmodalities:\n  photo: {kind: image, column: image, "
                                               "shape: [3, 8, 8]}\n  x: [x]\nlabel: y\n")
    return d


def _tree(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in root.rglob("*") if p.is_file() or p.is_dir()}


@pytest.fixture()
def no_training(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a bad input reached training")

    monkeypatch.setattr(loop.Trainer, "fit", refuse)


NO_GPU = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
ROOT = os.geteuid() == 0 if hasattr(os, "geteuid") else False

RUN = ["run", "--dataset", "synthetic", "--method", "masked-mean", "--no-subsets"]

# (id, argv with {d} = the inputs folder, culprit the message must name)
CLI_CASES = [
    # --- run: names, protocols, rates, seeds, splits
    ("unknown-dataset", ["run", "--dataset", "nosuch", "--method", "masked-mean"], "unknown dataset 'nosuch'"),
    ("unknown-method", ["run", "--dataset", "synthetic", "--method", "nosuch"], "unknown method 'nosuch'"),
    ("unknown-protocol", RUN + ["--protocol", "nosuch"], "unknown protocol 'nosuch'"),
    ("rate-above-1", RUN + ["--rate", "1.5"], "rate"),
    ("rate-nan", RUN + ["--rate", "nan"], "rate"),
    ("rate-above-entry-bound", RUN + ["--rate", "0.9"], "rate"),
    ("train-rate-negative", RUN + ["--train-rate", "-0.1"], "rate"),
    ("rate-not-a-number", RUN + ["--rate", "lots"], "--rate"),
    ("fixed-subset-without-subset", RUN + ["--protocol", "fixed-subset"], "needs parameter 'subset'"),
    ("subset-unknown-modality", RUN + ["--protocol", "fixed-subset", "--subset", "nosuch"], "nosuch"),
    ("rateless-protocol-with-rate", RUN + ["--protocol", "none", "--rate", "0.3"], "takes no rate"),
    ("per-modality-wrong-count", RUN + ["--protocol", "per-modality", "--rates", "0.1,0.2"], "rates"),
    ("per-modality-bad-number", RUN + ["--protocol", "per-modality", "--rates", "0.1,x,0.2"], "--rates"),
    ("mnar-strength", RUN + ["--protocol", "mnar", "--rate", "0.3", "--strength", "2"], "strength"),
    ("protocol-param-unknown", RUN + ["--protocol-param", "block=3"], "has no parameter 'block'"),
    ("protocol-param-no-equals", RUN + ["--protocol-param", "block"], "expected KEY=VALUE"),
    ("seeds-repeat", RUN + ["--seeds", "0,0"], "seeds repeat 0"),
    ("seeds-unreadable", RUN + ["--seeds", "x"], "--seeds"),
    ("seeds-empty", RUN + ["--seeds", ","], "--seeds"),
    ("seeds-negative", RUN + ["--seeds", "-3,1"], "seed"),
    ("split-unknown", RUN + ["--split", "nosuch"], "unknown split 'nosuch'"),
    # --- run: training settings (TrainConfig)
    ("lr-inf", RUN + ["--lr", "inf"], "lr=inf"),
    ("lr-nan", RUN + ["--lr", "nan"], "lr=nan"),
    ("lr-zero", RUN + ["--lr", "0"], "lr=0.0"),
    ("lr-negative", RUN + ["--lr", "-1"], "lr=-1.0"),
    ("lr-overflowing", RUN + ["--lr", "1e300"], "lr=1e+300"),  # (AdamW overflowed float32: a RuntimeError)
    ("grad-clip-negative", RUN + ["--grad-clip", "-1"], "grad_clip=-1.0"),
    ("grad-clip-zero", RUN + ["--grad-clip", "0"], "grad_clip=0.0"),
    ("weight-decay-negative", RUN + ["--weight-decay", "-1"], "weight_decay=-1.0"),
    ("batch-size-zero", RUN + ["--batch-size", "0"], "batch_size=0"),
    ("batch-size-fraction", RUN + ["--batch-size", "2.5"], "--batch-size"),
    ("epochs-zero", RUN + ["--epochs", "0"], "max_epochs=0"),
    ("patience-zero", RUN + ["--patience", "0"], "patience=0"),
    ("modality-dropout-one", RUN + ["--modality-dropout", "1"], "modality_dropout=1.0"),
    ("min-steps-zero", RUN + ["--min-steps-per-epoch", "0"], "min_steps_per_epoch=0"),
    ("threads-zero", RUN + ["--threads", "0"], "--threads"),
    ("select-on-unknown", RUN + ["--select-on", "f1"], "--select-on"),
    # --- run: method parameters
    ("embed-dim-zero", RUN + ["--param", "embed_dim=0"], "embed_dim=0"),
    ("embed-dim-negative", RUN + ["--param", "embed_dim=-4"], "embed_dim=-4"),
    ("embed-dim-fraction", RUN + ["--param", "embed_dim=1.5"], "embed_dim=1.5"),
    ("embed-dim-text", RUN + ["--param", "embed_dim=abc"], "embed_dim=str 'abc'"),
    ("embed-dim-huge", RUN + ["--param", "embed_dim=100000000"], "embed_dim=100000000"),
    ("embed-dim-float-huge", RUN + ["--param", "embed_dim=1e8"], "embed_dim=100000000.0"),
    ("param-unknown", RUN + ["--param", "nosuch=1"], "'nosuch'; allowed: dropout, embed_dim, encoders, head, hidden"),
    ("dropout-nan", RUN + ["--param", "dropout=NaN"], "dropout=nan"),
    ("dropout-one", RUN + ["--param", "dropout=1"], "dropout=1"),
    ("param-no-equals", RUN + ["--param", "embed_dim"], "expected KEY=VALUE"),
    # --- run: devices and outputs
    ("device-bogus", RUN + ["--device", "bogus"], "device 'bogus'"),
    ("device-cuda-absent", RUN + ["--device", "cuda"], "CUDA is not available", NO_GPU),
    ("device-meta", RUN + ["--device", "meta"], "device 'meta'"),
    ("out-missing-folder", RUN + ["--out", "nofolder/r.json"], "--out: folder of 'nofolder/r.json' does not exist"),
    ("out-is-a-folder", RUN + ["--out", "{d}/x.csv"], "is a folder"),
    # --- run: the user's data files
    ("data-file-missing", ["run", "--data-file", "{d}/nosuch.csv", "--label", "y"], "nosuch.csv"),
    ("data-file-unknown-format", ["run", "--data-file", "{d}/data.xyz"], "unknown data format .xyz"),
    ("csv-header-only", ["run", "--data-file", "{d}/header.csv", "--label", "y", "--modality", "a=a1,a2"],
     "header.csv: the table has a header"),
    ("csv-without-label", ["run", "--data-file", "{d}/ok.csv", "--modality", "a=a1,a2"], "needs 'label'"),
    ("csv-without-modality", ["run", "--data-file", "{d}/ok.csv", "--label", "y"], "needs 'modalities'"),
    ("csv-unknown-column", ["run", "--data-file", "{d}/ok.csv", "--label", "y", "--modality", "a=zz"], "'zz'"),
    ("csv-unknown-label", ["run", "--data-file", "{d}/ok.csv", "--label", "q", "--modality", "a=a1"], "'q'"),
    ("npz-scalar", ["run", "--data-file", "{d}/scalar.npz"], "array 'a' is a scalar"),
    ("npz-unequal-length", ["run", "--data-file", "{d}/unequal.npz"], "'a' has 10, 'b' has 8"),
    ("npz-2d-label", ["run", "--data-file", "{d}/label2d.npz"], "labels must be one per row"),
    ("folder-named-csv", ["run", "--data-file", "{d}/x.csv", "--label", "y"], "x.csv: is a folder"),
    ("data-dir-missing", ["run", "--data-dir", "{d}/nosuch", "--method", "masked-mean"], "nosuch' does not exist"),
    ("data-dir-not-a-dataset", ["run", "--data-dir", "{d}/x.csv"], "neither a memory-mapped dataset"),
    ("data-dir-absent-image", ["run", "--data-dir", "{d}/photos"], "row 1: modality 'photo' names image file"),
    ("bench-data-dir-missing", ["bench", "{d}/spec.yaml", "--data-dir", "{d}/nosuch"], "nosuch' does not exist"),
    ("mapping-names-itself", ["run", "--data-file", "{d}/self.yaml"], "names another mapping file"),
    ("mapping-alias", ["run", "--data-file", "{d}/alias.yaml"], "YAML anchor &p refused"),
    ("mapping-binary", ["run", "--data-file", "{d}/bin.yaml"], "bin.yaml: not a text data mapping file"),
    ("split-random-too-small", ["run", "--data-file", "{d}/tiny5.csv", "--label", "y", "--modality", "a=a1,a2",
                                "--modality", "b=b1", "--split", "random", "--method", "masked-mean"],
     "the validation carve-out is empty: 10 rows with --split random"),
    # --- stream / diagnostics / demo
    ("stream-vector-dataset", ["stream", "--dataset", "synthetic"], "has no sequence modality"),
    ("stream-every-zero", ["stream", "--dataset", "basicmotions", "--every", "0"], "--every"),
    ("stream-fail-unknown", ["stream", "--dataset", "basicmotions", "--fail", "nosuch@5"], "nosuch"),
    ("stream-method-cannot", ["stream", "--dataset", "basicmotions", "--method", "masked-mean"], "cannot stream"),
    ("uncertainty-bins-zero", ["uncertainty", "--dataset", "synthetic", "--bins", "0"], "n_bins=0"),
    ("uncertainty-seeds-repeat", ["uncertainty", "--dataset", "synthetic", "--seeds", "1,1"], "seeds repeat 1"),
    ("explain-permutations", ["explain", "--dataset", "synthetic", "--permutations", "1"], "--permutations"),
    ("explain-lr-inf", ["explain", "--dataset", "synthetic", "--lr", "inf"], "lr=inf"),
    ("recover-not-recovering", ["recover", "--dataset", "synthetic", "--method", "masked-mean"], "masked-mean"),
    ("recover-rate", ["recover", "--dataset", "synthetic", "--rates", "2"], "rate"),
    ("demo-rate", ["demo", "--dataset", "synthetic", "--rates", "2", "--out", "demo-out"], "rate"),
    ("demo-seeds-repeat", ["demo", "--dataset", "synthetic", "--seeds", "0,0", "--out", "demo-out"], "seeds repeat"),
    ("demo-out-is-a-file", ["demo", "--dataset", "synthetic", "--out", "{d}/a_file"], "is not a folder"),
    # --- bench / reproduce / report
    ("bench-missing-spec", ["bench", "{d}/nosuch.yaml"], "nosuch.yaml"),
    ("bench-alias-bomb", ["bench", "{d}/bomb.yaml"], "YAML anchor &a0 refused"),
    ("bench-binary-spec", ["bench", "{d}/binspec.yaml"], "binspec.yaml: not a text spec file"),
    ("bench-oversized-spec", ["bench", "{d}/bigspec.yaml"], "over the 1048576-byte limit"),
    ("bench-not-yaml", ["bench", "{d}/notyaml.yaml"], "not valid YAML"),
    ("bench-grad-clip-negative", ["bench", "{d}/spec.yaml", "--set", "train.grad_clip=-1"], "grad_clip=-1.0"),
    ("bench-seeds-repeat", ["bench", "{d}/spec.yaml", "--set", "seeds=[0,0]"], "seeds repeat"),
    ("bench-embed-dim", ["bench", "{d}/spec.yaml", "--set", "methods.0.params.embed_dim=0"], "embed_dim=0"),
    ("bench-db-missing-folder", ["bench", "{d}/spec.yaml", "--db", "nofolder/r.sqlite"], "nofolder"),
    ("bench-db-not-a-database", ["bench", "{d}/spec.yaml", "--db", "{d}/notdb.sqlite"], "not an mlmm results"),
    ("bench-workers-zero", ["bench", "{d}/spec.yaml", "--workers", "0"], "workers"),
    ("reproduce-unknown", ["reproduce", "nosuch"], "unknown experiment 'nosuch'"),
    ("report-missing", ["report", "nosuch.sqlite"], "nosuch.sqlite"),
    ("report-not-json", ["report", "{d}/notjson.json"], "notjson.json"),
    ("report-out-is-a-file", ["report", "{d}/notdb.sqlite", "-o", "{d}/a_file"], "is not a folder"),
    # --- argparse
    ("no-command", [], "required"),
    ("unknown-flag", RUN + ["--nosuch"], "unrecognized arguments: --nosuch"),
]


@pytest.mark.parametrize("argv, culprit", [pytest.param(c[1], c[2], id=c[0], marks=c[3:]) for c in CLI_CASES])
def test_cli_bad_input(argv, culprit, inputs, tmp_path, monkeypatch, capsys, no_training):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLMM_DEBUG", raising=False)
    before = _tree(inputs)
    code = main([a.replace("{d}", str(inputs)) for a in argv])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.count("\n") == 1 and err.startswith("mlmm: error: "), err
    assert culprit in err, err
    assert list(tmp_path.iterdir()) == [], "a bad input wrote a file"
    assert _tree(inputs) == before, "a bad input changed an input file"


def test_cli_cases_are_many():
    assert len(CLI_CASES) + len(API_CASES) >= 60


# --- the few cases that train (tiny data, 1-2 epochs) ----------------------------


@pytest.mark.parametrize("argv, culprit", [
    (RUN + ["--lr", "10000", "--epochs", "2", "--json"],
     "training diverged: loss term 'task' is non-finite at epoch 1"),
    (RUN + ["--lr", "50000", "--epochs", "1", "--batch-size", "8", "--modality-dropout", "0"], "non-finite"),
])
def test_cli_divergence_exits_2_with_one_line(argv, culprit, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code = main(argv + ["--out", "r.json"])
    captured = capsys.readouterr()
    assert code == 2 and captured.err.count("\n") == 1 and culprit in captured.err, captured.err
    assert captured.out == "" and list(tmp_path.iterdir()) == []  # no result printed or written


def test_cli_json_is_printed_even_if_writing_out_fails(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    from mlmm.cli import run as run_module

    def disk_full(path, payload):
        raise OSError(28, "No space left on device", path)

    monkeypatch.setattr(run_module, "_write_json", disk_full)
    code = main(RUN + ["--epochs", "1", "--json", "--out", "r.json"])
    captured = capsys.readouterr()
    assert code == 2 and '"accuracy"' in captured.out  # the results survive on stdout
    assert captured.err == "mlmm: error: r.json: no space left on the device (disk full)\n"


@pytest.mark.parametrize("error, line", [
    (OSError(28, "No space left on device", "db.sqlite"), "db.sqlite: no space left on the device (disk full)"),
    (OSError(30, "Read-only file system", "r.json"), "r.json: read-only file system"),
    (PermissionError(13, "Permission denied", "r.json"), "r.json: permission denied"),
    (__import__("sqlite3").OperationalError("attempt to write a readonly database"),
     "results database: attempt to write a readonly database; is the file or its folder read-only?"),
    (MemoryError(), "out of memory; use smaller data, model or batch"),
])
def test_known_runtime_conditions_are_one_line(error, line, monkeypatch, capsys):
    from mlmm.cli import listing

    def fail(args):
        raise error

    monkeypatch.setattr(listing, "cmd_listing", fail)
    monkeypatch.delenv("MLMM_DEBUG", raising=False)
    assert main(["datasets"]) == 2
    assert capsys.readouterr().err == f"mlmm: error: {line}\n"


def test_a_bug_is_one_line_exit_1_and_a_traceback_only_with_mlmm_debug(monkeypatch, capsys):
    from mlmm.cli import listing

    def bug(args):
        raise ZeroDivisionError("oops")

    monkeypatch.setattr(listing, "cmd_listing", bug)
    monkeypatch.delenv("MLMM_DEBUG", raising=False)
    assert main(["datasets"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "internal error: ZeroDivisionError: oops" in err and "MLMM_DEBUG=1" in err
    monkeypatch.setenv("MLMM_DEBUG", "1")
    with pytest.raises(ZeroDivisionError):
        main(["datasets"])


@pytest.mark.slow  # a fresh interpreter imports torch: ~3 s idle, 15 s on a loaded machine
def test_subprocess_exit_code_and_single_line():
    """The console entry point itself (a handful of cases through a real process)."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src"), "OMP_NUM_THREADS": "1"}
    env.pop("MLMM_DEBUG", None)
    out = subprocess.run([sys.executable, "-m", "mlmm.cli", "run", "--dataset", "synthetic", "--method",
                          "masked-mean", "--param", "embed_dim=abc"], capture_output=True, text=True, env=env,
                         timeout=120)
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and "embed_dim=str 'abc'" in out.stderr


# --- Python API -------------------------------------------------------------------


def _api_cases():
    import io

    from mlmm import ExperimentConfig, TrainConfig, build_method, evaluate, load_dataset, make_protocol, run_experiment
    from mlmm.data.datasets import make_synthetic
    from mlmm.data.loaders import load_data_file
    from mlmm.data.loaders.safe_pickle import safe_load
    from mlmm.errors import DeviceError, InvalidParameterError, UnsafeFileError
    from mlmm.experiment import check_seeds
    from mlmm.safe_yaml import load_yaml
    from mlmm.train.loop import Trainer

    spec = lambda: load_dataset("synthetic").spec  # noqa: E731

    def fitted_model():
        from mlmm.data.preprocess import Standardizer
        from mlmm.train.loop import FittedModel

        data = make_synthetic(n_samples=20, n_classes=3, n_modalities=3, dims=4, seed=0)
        return FittedModel(Standardizer(data.spec).fit(data.as_batch()), build_method("masked-mean", data.spec))

    other = lambda: make_synthetic(n_samples=20, n_classes=3, n_modalities=2, dims=4, seed=0)  # noqa: E731
    return [
        ("train-lr-inf", lambda d: TrainConfig(lr=float("inf")), InvalidParameterError, "lr=inf"),
        ("train-grad-clip-negative", lambda d: TrainConfig(grad_clip=-1.0), InvalidParameterError, "grad_clip=-1.0"),
        ("train-batch-size-fraction", lambda d: TrainConfig(batch_size=2.5), InvalidParameterError, "batch_size=2.5"),
        ("train-batch-size-text", lambda d: TrainConfig(batch_size="3"), InvalidParameterError, "batch_size=str '3'"),
        ("train-max-epochs-text", lambda d: TrainConfig(max_epochs="3"), InvalidParameterError, "max_epochs=str '3'"),
        ("train-weight-decay", lambda d: TrainConfig(weight_decay=-1e-3), InvalidParameterError, "weight_decay"),
        ("method-embed-dim-zero", lambda d: build_method("masked-mean", spec(), embed_dim=0), InvalidParameterError,
         "embed_dim=0"),
        ("method-unknown-param", lambda d: build_method("masked-mean", spec(), nosuch=1), InvalidParameterError,
         "unknown parameter 'nosuch'"),
        ("method-dropout-nan", lambda d: build_method("masked-mean", spec(), dropout=float("nan")),
         InvalidParameterError, "dropout=nan"),
        ("ensemble-member-param", lambda d: build_method("deep-ensemble", spec(), members=2, embed_dim=-1),
         InvalidParameterError, "embed_dim=-1"),
        ("experiment-seeds-empty", lambda d: run_experiment(ExperimentConfig("synthetic", "masked-mean", seeds=())),
         ValueError, "seeds is empty"),
        ("experiment-seeds-repeat", lambda d: check_seeds((1, 1)), InvalidParameterError, "seeds repeat 1"),
        ("protocol-missing-param", lambda d: make_protocol("fixed-subset"), ValueError, "needs parameter 'subset'"),
        ("trainer-device", lambda d: Trainer(device="bogus"), DeviceError, "device 'bogus'"),
        ("npz-scalar", lambda d: load_data_file(d / "scalar.npz"), ValueError, "is a scalar"),
        ("mapping-self", lambda d: load_data_file(d / "self.yaml"), ValueError, "names another mapping file"),
        ("yaml-alias", lambda d: load_yaml("a: &x 1\nb: *x\n", "s.yaml"), UnsafeFileError, "s.yaml: line 1"),
        ("pickle-bytes-bomb", lambda d: safe_load(io.BytesIO(b"\x80\x02cbuiltins\nbytes\nJ\x00\x00\x00\x40\x85R.")),
         UnsafeFileError, "builtins.bytes(1073741824)"),
        ("evaluate-other-dataset", lambda d: evaluate(fitted_model(), other()), ValueError,
         "the data has modalities (m0, m1)"),
    ]


API_CASES = _api_cases()


@pytest.mark.parametrize("call, error, culprit", [c[1:] for c in API_CASES], ids=[c[0] for c in API_CASES])
def test_api_bad_input(call, error, culprit, inputs, no_training):
    before = _tree(inputs)
    with pytest.raises(error) as info:
        call(inputs)
    assert culprit in str(info.value)
    assert _tree(inputs) == before


# --- unwritable outputs (simulated: the tests may run as root, which ignores permission bits) ---


def test_out_in_a_read_only_folder_is_refused_before_training(tmp_path, monkeypatch, capsys, no_training):
    import tempfile

    monkeypatch.chdir(tmp_path)

    def read_only(*args, **kwargs):
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    assert main(RUN + ["--out", "r.json"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--out: cannot write in" in err and "(read-only file system)" in err
    assert list(tmp_path.iterdir()) == []


def test_read_only_database_is_refused_before_any_cell(inputs, tmp_path, monkeypatch, capsys, no_training):
    db = tmp_path / "r.sqlite"
    db.write_bytes(b"")
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if str(p) == str(db) else real(p, mode))
    assert main(["bench", str(inputs / "spec.yaml"), "--db", str(db)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--db:" in err and "is not writable (permission denied)" in err
    assert db.read_bytes() == b"" and [p.name for p in tmp_path.iterdir()] == ["r.sqlite"]
