"""Modality kinds are stated, never guessed silently; text ids and uint8 images are checked and stored
in their own dtype (issue 15)."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import torch

from mlmm.data import DatasetSpec, ModalitySpec, MultimodalDataset, Standardizer, TaskSpec
from mlmm.data.loaders import KindInferredWarning, load_arrays, load_data_file, load_table


def _arrays(n: int = 40, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"image": rng.random((n, 8, 8)).astype(np.float32),
            "caption": rng.integers(1, 50, (n, 6)).astype(np.int64),
            "y": np.arange(n) % 4}


def test_integer_array_without_kind_is_refused_with_the_flag_to_use():
    with pytest.warns(KindInferredWarning, match=r"'image' of per-sample shape \(8, 8\) read as sequence"):
        with pytest.raises(ValueError, match=r"modality 'caption' holds integers.*--kind caption=KIND.*'text'"):
            load_arrays(_arrays())


def test_stated_kinds_give_image_with_channel_and_text_ids_without_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        data = load_arrays(_arrays(), kinds={"image": "image", "caption": "text"}, vocab_size={"caption": 50})
    image, caption = data.spec.modality("image"), data.spec.modality("caption")
    assert (image.kind, image.shape) == ("image", (1, 8, 8))
    assert (caption.kind, caption.shape, caption.vocab_size, caption.pad_id) == ("text", (6,), 50, 0)
    assert data.inputs["caption"].dtype == torch.int64
    assert torch.equal(data.inputs["caption"], torch.as_tensor(_arrays()["caption"]))


def test_unstated_vocab_size_is_inferred_with_a_warning():
    with pytest.warns(KindInferredWarning, match="vocab_size not given, set to the largest id"):
        data = load_arrays(_arrays(), kinds={"image": "image", "caption": "text"})
    assert data.spec.modality("caption").vocab_size == int(_arrays()["caption"].max()) + 1


@pytest.mark.parametrize("bad", [-1, 50])
def test_token_id_out_of_range_names_modality_and_value(bad):
    arrays = _arrays()
    arrays["caption"][7, 2] = bad
    message = rf"modality 'caption': token id {bad} in sample 7 is outside \[0, vocab_size=50\)"
    with pytest.raises(ValueError, match=message):
        load_arrays(arrays, kinds={"image": "image", "caption": "text"}, vocab_size={"caption": 50})


def test_all_padding_caption_counts_as_missing_and_pad_id_is_honoured():
    arrays = _arrays()
    arrays["caption"][3] = 0
    arrays["caption"][5] = 9
    data = load_arrays(arrays, kinds={"image": "image", "caption": "text"}, vocab_size={"caption": 50})
    assert not data.mask[3, 1] and data.mask[5, 1] and int(data.mask[:, 1].sum()) == 39
    data9 = load_arrays(arrays, kinds={"image": "image", "caption": "text"}, vocab_size={"caption": 50},
                        pad_id={"caption": 9})
    assert data9.mask[3, 1] and not data9.mask[5, 1]


def test_text_given_as_floats_with_nan_rows_becomes_missing_ids():
    arrays = _arrays()
    caption = arrays["caption"].astype(np.float64)
    caption[2] = np.nan
    arrays["caption"] = caption
    data = load_arrays(arrays, kinds={"image": "image", "caption": "text"}, vocab_size={"caption": 50})
    assert data.inputs["caption"].dtype == torch.int64 and not data.mask[2, 1] and data.mask[1, 1]
    caption[4, 0] = 1.5
    with pytest.raises(ValueError, match="'caption' holds non-integer values"):
        load_arrays(arrays, kinds={"image": "image", "caption": "text"}, vocab_size={"caption": 50})


def test_modality_spec_checks_vocab_and_pad():
    with pytest.raises(ValueError, match="pad_id 5 is outside"):
        ModalitySpec("t", "text", (4,), vocab_size=5, pad_id=5)
    with pytest.raises(ValueError, match="apply to text modalities only"):
        ModalitySpec("v", "vector", (4,), vocab_size=5)


def test_uint8_images_are_stored_small_and_scaled_by_the_standardizer():
    rng = np.random.default_rng(1)
    pixels = rng.integers(0, 256, (30, 1, 4, 4)).astype(np.uint8)
    spec = DatasetSpec("u", (ModalitySpec("img", "image", (1, 4, 4)), ModalitySpec("v", "vector", (2,))),
                       TaskSpec(n_classes=2))
    mask = np.ones((30, 2), bool)
    mask[0, 0] = False
    vec = rng.random((30, 2)).astype(np.float32)
    small = MultimodalDataset(spec, {"img": pixels, "v": vec}, np.arange(30) % 2, mask)
    big = MultimodalDataset(spec, {"img": pixels.astype(np.float32) / 255.0, "v": vec}, np.arange(30) % 2, mask)
    assert small.inputs["img"].dtype == torch.uint8
    assert small.inputs["img"].element_size() * 4 == big.inputs["img"].element_size()
    s_small = Standardizer(spec).fit(small.as_batch())
    s_big = Standardizer(spec).fit(big.as_batch())
    out_small, out_big = s_small(small.as_batch()).inputs["img"], s_big(big.as_batch()).inputs["img"]
    assert out_small.dtype == torch.float32 and torch.allclose(out_small, out_big, atol=1e-5)
    assert (out_small[0] == 0).all()  # the masked-out image stays exactly zero


def test_uint8_array_of_rank_three_is_an_image_and_other_ints_are_refused():
    arrays = {"img": np.zeros((10, 1, 3, 3), np.uint8) + 3, "y": np.arange(10) % 2}
    with pytest.warns(KindInferredWarning, match="read as image"):
        assert load_arrays(arrays).spec.modality("img").kind == "image"
    with pytest.raises(ValueError, match="holds integers"):
        load_arrays({"counts": np.ones((10, 3), np.int32), "y": np.arange(10) % 2})


def test_table_of_integer_token_columns_needs_a_kind(tmp_path):
    rng = np.random.default_rng(2)
    df = pd.DataFrame({f"tok_{i}": rng.integers(1, 20, 12) for i in range(4)})
    df["x1"], df["x2"], df["y"] = rng.random(12), rng.random(12), np.arange(12) % 2
    path = tmp_path / "t.csv"
    df.to_csv(path, index=False)
    mods = {"tokens": "prefix:tok_", "num": "x1,x2"}
    with pytest.raises(ValueError, match="'tokens' holds integers"):
        load_table(path, mods, "y")
    data = load_table(path, mods, "y", kinds={"tokens": "text"}, vocab_size={"tokens": 20})
    assert data.spec.modality("tokens").kind == "text" and data.spec.modality("num").kind == "vector"
    with pytest.raises(ValueError, match="'vector' or 'text' modalities"):
        load_table(path, mods, "y", kinds={"tokens": "image"})


def test_mapping_file_takes_kinds_vocab_size_and_pad_id(tmp_path):
    np.savez(tmp_path / "d.npz", **_arrays())
    (tmp_path / "d.yaml").write_text("path: d.npz\nlabel: y\nkinds: {image: image, caption: text}\n"
                                     "vocab_size: {caption: 64}\npad_id: {caption: 0}\n")
    data = load_data_file(tmp_path / "d.yaml")
    assert data.spec.modality("caption").vocab_size == 64 and data.spec.modality("image").shape == (1, 8, 8)


def test_kind_flags_are_parsed_and_checked():
    from mlmm.data.loaders.user_data import parse_kind_flags

    assert parse_kind_flags(["image=image", " caption = text"]) == {"image": "image", "caption": "text"}
    assert parse_kind_flags(["caption=30522"], "--vocab-size", int) == {"caption": 30522}
    with pytest.raises(ValueError, match="kind must be one of vector, sequence, image, text"):
        parse_kind_flags(["caption=words"])
    with pytest.raises(ValueError, match="given twice"):
        parse_kind_flags(["a=text", "a=image"])
    with pytest.raises(ValueError, match="is not an integer"):
        parse_kind_flags(["caption=big"], "--vocab-size", int)


def test_cli_refuses_unstated_integer_ids_and_runs_with_kind_flags(tmp_path, capsys):
    from mlmm.cli import main

    arrays = _arrays(n=60)
    arrays["split"] = np.where(np.arange(60) % 4 == 0, "test", "train")
    np.savez(tmp_path / "d.npz", **arrays)
    base = ["run", "--data-file", str(tmp_path / "d.npz"), "--method", "masked-mean", "--epochs", "1", "--no-subsets"]
    assert main(base) == 2
    err = capsys.readouterr().err
    assert "mlmm: note:" in err and "read as sequence" in err  # the (8, 8) image, inferred and said
    assert "modality 'caption' holds integers" in err and "--kind caption=KIND" in err
    assert main(base + ["--kind", "image=image", "--kind", "caption=text", "--vocab-size", "caption=50"]) == 0
    assert "mlmm: note:" not in capsys.readouterr().err  # everything stated: nothing inferred
    assert main(base + ["--kind", "caption=words"]) == 2
    assert "kind must be one of" in capsys.readouterr().err


def test_cli_methods_shows_the_kinds_a_method_does_not_take(capsys):
    from mlmm.cli import main

    assert main(["methods"]) == 0
    out = capsys.readouterr().out
    assert "does not take" in out and "zero-fill does not take text: early fusion" in out


def test_default_encoders_size_text_from_the_spec_and_images_by_resolution():
    from mlmm.components.encoders import ImageEncoder, TextEncoder, build_encoder

    text = build_encoder(ModalitySpec("c", "text", (6,), vocab_size=77, pad_id=3), 16)
    assert isinstance(text, TextEncoder) and text.embed.num_embeddings == 77 and text.embed.padding_idx == 3
    ids = torch.tensor([[5, 9, 3, 3, 3, 3]])
    assert torch.allclose(text(ids), text(torch.tensor([[5, 9, 3, 3, 3, 3]])[:, :3]))  # padding is not read
    with pytest.raises(ValueError, match="text modality 'c' has no vocab_size"):
        build_encoder(ModalitySpec("c", "text", (6,)), 16)
    for side in (8, 28, 112):
        enc = build_encoder(ModalitySpec("i", "image", (1, side, side)), 16)
        assert isinstance(enc, ImageEncoder) and enc(torch.zeros(2, 1, side, side)).shape == (2, 16)
    small, large = (build_encoder(ModalitySpec("i", "image", (1, s, s)), 16) for s in (8, 112))
    assert len(large.conv) > len(small.conv)  # large images are downsampled in the stem
