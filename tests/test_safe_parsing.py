"""Safe parsing of user files: YAML specs and mapping files refuse anchors/aliases (found: a
~500-byte spec of nested aliases hung `mlmm bench` for minutes) and oversized or binary
files; loaders name the file and the real cause of a bad input."""

from __future__ import annotations

import time

import numpy as np
import pytest

from mlmm.bench.spec import SpecError, load_spec, parse_spec
from mlmm.data.loaders import load_data_file
from mlmm.errors import UnsafeFileError
from mlmm.safe_yaml import MAX_BYTES, load_yaml

SPEC = """name: t
datasets: [synthetic]
methods: [masked-mean]
scenarios: [{protocol: entry, rates: [0]}]
seeds: [0]
"""


def _billion_laughs(levels: int = 9) -> str:
    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    lines += [f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


def test_alias_bomb_is_refused_at_once_naming_file_and_line(tmp_path):
    path = tmp_path / "bomb.yaml"
    path.write_text(SPEC + _billion_laughs())
    assert path.stat().st_size < 1000
    start = time.perf_counter()
    with pytest.raises(SpecError, match=r"bomb.yaml: line 6: YAML anchor &a0 refused"):
        load_spec(path)
    assert time.perf_counter() - start < 1.0


def test_aliases_and_merge_keys_are_refused():
    with pytest.raises(UnsafeFileError, match=r"s.yaml: line 2: YAML alias \*x refused"):
        load_yaml("a: 1\nb: *x\n", "s.yaml")
    with pytest.raises(UnsafeFileError, match="anchor &base"):
        load_yaml("base: &base {x: 1}\nother:\n  <<: *base\n", "s.yaml")
    assert load_yaml("a: [1, 2]\nb: {c: d}\n") == {"a": [1, 2], "b": {"c": "d"}}


def test_oversized_and_binary_spec_files_are_named(tmp_path):
    big = tmp_path / "big.yaml"
    big.write_text(SPEC + "#" * MAX_BYTES)
    with pytest.raises(SpecError, match=r"big.yaml: \d+ bytes is over the 1048576-byte limit"):
        load_spec(big)
    binary = tmp_path / "bin.yaml"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe\x00")
    with pytest.raises(SpecError, match=r"bin.yaml: not a text spec file \(byte 0 is not UTF-8\)"):
        load_spec(binary)
    with pytest.raises(SpecError, match="<s>: line 1: YAML anchor"):
        parse_spec("name: &n t\n", "<s>")


@pytest.fixture()
def files(tmp_path):
    np.savez(tmp_path / "unequal.npz", a=np.zeros((10, 3)), b=np.zeros((8, 2)), y=np.arange(10) % 2)
    np.savez(tmp_path / "scalar.npz", a=np.float64(3.0), y=np.arange(10) % 2)
    np.savez(tmp_path / "label2d.npz", a=np.random.rand(10, 3), y=np.zeros((10, 2)))
    (tmp_path / "header.csv").write_text("a1,a2,b1,y\n")
    (tmp_path / "ok.csv").write_text("a1,a2,b1,y\n" + "".join(f"{i},{2 * i},{i % 3},{i % 2}\n" for i in range(20)))
    (tmp_path / "x.csv").mkdir()
    (tmp_path / "self.yaml").write_text("path: self.yaml\n")
    (tmp_path / "alias.yaml").write_text("path: &p ok.csv\nlabel: *p\n")
    (tmp_path / "bin.yaml").write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff")
    return tmp_path


@pytest.mark.parametrize("name, options, error, message", [
    ("unequal.npz", {}, ValueError,
     r"unequal.npz: arrays of unequal length \(rows: 'a' has 10, 'b' has 8, 'y' has 10\)"),
    ("scalar.npz", {}, ValueError, r"scalar.npz: array 'a' is a scalar"),
    ("label2d.npz", {}, ValueError, r"label2d.npz key 'y': classification labels must be one per row, .*\(10, 2\)"),
    ("header.csv", dict(modalities={"a": "a1,a2"}, label="y"), ValueError, r"header.csv: the table has a header"),
    ("ok.csv", dict(modalities={"a": "a1,a2"}), ValueError, r"ok.csv: load_table needs 'label' \(give --label"),
    ("ok.csv", dict(label="y"), ValueError, r"ok.csv: load_table needs 'modalities' \(give --modality"),
    ("x.csv", dict(label="y"), IsADirectoryError, r"x.csv: is a folder, not a .csv file"),
    ("self.yaml", {}, ValueError, r"self.yaml: 'path' names another mapping file"),
    ("alias.yaml", {}, UnsafeFileError, r"alias.yaml: line 1: YAML anchor &p refused"),
    ("bin.yaml", {}, ValueError, r"bin.yaml: not a text data mapping file"),
])
def test_loaders_name_the_file_and_cause(files, name, options, error, message):
    with pytest.raises(error, match=message):
        load_data_file(files / name, **options)
