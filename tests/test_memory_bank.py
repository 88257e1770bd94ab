"""The memory bank's row-identity check (a training sample must not retrieve its own copy)."""

import torch

from mlmm.components.memory_bank import _equal_rows


def test_equal_rows_matches_the_full_comparison_with_first_feature_collisions() -> None:
    g = torch.Generator().manual_seed(0)
    bank = torch.randint(0, 3, (200, 7), generator=g).float()  # discrete: many first-feature ties
    x = torch.cat([bank[:20], torch.randint(0, 3, (30, 7), generator=g).float()])
    expected = (x.unsqueeze(1) == bank.unsqueeze(0)).all(dim=2)
    assert torch.equal(_equal_rows(x, bank), expected)
    assert expected[:20].any(dim=1).all()  # each copied row finds itself


def test_equal_rows_single_feature_and_empty_inputs() -> None:
    bank = torch.tensor([[1.0], [2.0], [1.0]])
    assert torch.equal(_equal_rows(torch.tensor([[1.0], [3.0]]), bank),
                       torch.tensor([[True, False, True], [False, False, False]]))
    assert _equal_rows(torch.zeros(0, 4), torch.zeros(5, 4)).shape == (0, 5)


def test_equal_rows_compares_only_the_given_pairs() -> None:
    bank = torch.zeros(4, 3)
    pairs = torch.tensor([[True, False, True, False]])
    assert torch.equal(_equal_rows(torch.zeros(1, 3), bank, pairs), pairs)
