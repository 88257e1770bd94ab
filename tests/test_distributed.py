"""Data-parallel training: two real CPU processes (gloo) running the one training loop."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from mlmm.data.datasets import make_synthetic
from mlmm.train import distributed
from mlmm.train.loop import TrainConfig, Trainer, build_method


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_single_process_helpers_are_the_identity() -> None:
    assert not distributed.is_distributed()
    assert distributed.rank() == 0 and distributed.world_size() == 1
    assert distributed.rank_seed(7) == 7 and distributed.per_rank_batch_size(128) == 128
    module = torch.nn.Linear(2, 2)
    assert distributed.wrap(module) is module


def test_init_from_env_outside_torchrun_names_what_is_missing(monkeypatch) -> None:
    for var in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(RuntimeError, match="torchrun.*RANK"):
        distributed.init_from_env()


def _worker(rank: int, port: int, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        data = make_synthetic(n_samples=120, n_modalities=3, seed=0)
        train, val = data.subset(range(0, 90)), data.subset(range(90, 120))
        order = distributed.shard_order(90, epoch=3, seed=5, device=torch.device("cpu"))
        method = build_method("masked-mean", data.spec, seed=0, embed_dim=16)
        fit = Trainer(TrainConfig(max_epochs=4, patience=4, batch_size=32)).fit(method, train, val, seed=5)
        state = {k: v.clone() for k, v in fit.model.state_dict().items()}
        torch.save({"order": order, "state": state, "best": fit.best_epoch, "history": fit.history},
                   os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_process_training_keeps_ranks_identical_on_disjoint_shards(tmp_path) -> None:
    mp.spawn(_worker, args=(_free_port(), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    # Each rank saw its own half of the rows: disjoint shards covering all 90 rows.
    assert len(r0["order"]) == len(r1["order"]) == 45
    assert set(r0["order"].tolist()).isdisjoint(r1["order"].tolist())
    assert set(r0["order"].tolist()) | set(r1["order"].tolist()) == set(range(90))
    # Gradients are averaged, so both ranks hold the same weights and made the same selection.
    assert r0["best"] == r1["best"]
    for name, value in r0["state"].items():
        torch.testing.assert_close(value, r1["state"][name], rtol=0, atol=0, msg=f"{name} differs across ranks")
    # Ranks train on different rows, so their training losses differ while validation agrees.
    assert r0["history"][0]["train_loss"] != r1["history"][0]["train_loss"]
    assert r0["history"][-1]["val_loss"] == r1["history"][-1]["val_loss"]


@pytest.mark.slow
def test_torchrun_cli_reports_once_from_rank_zero(tmp_path) -> None:
    out = tmp_path / "result.json"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", str(_free_port()),
           "-m", "mlmm.cli", "run", "--dataset", "synthetic", "--method", "masked-mean", "--rate", "0.3",
           "--epochs", "2", "--no-subsets", "--distributed", "--json", "--out", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    printed = json.loads(done.stdout)  # exactly one JSON document: rank 1 printed nothing
    assert printed["method"] == "masked-mean" and 0.0 <= printed["metrics"]["accuracy"]["mean"] <= 1.0
    assert json.loads(out.read_text()) == printed
