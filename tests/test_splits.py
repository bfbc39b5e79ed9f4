import numpy as np
import pytest

from fusedmlp.data.splits import SplitSettings, load_split, save_split, split_indices
from fusedmlp.io import InputError


def test_paper_file_order_split_sizes():
    s = split_indices(5704)
    assert [len(s[k]) for k in ("train", "val", "test")] == [3994, 570, 1140]
    np.testing.assert_array_equal(s["train"], np.arange(3994))
    np.testing.assert_array_equal(s["val"], np.arange(3994, 4564))
    np.testing.assert_array_equal(s["test"], np.arange(4564, 5704))


def test_shuffled_split_is_seeded_and_a_partition():
    a = split_indices(101, SplitSettings(shuffle=True, seed=3))
    b = split_indices(101, SplitSettings(shuffle=True, seed=3))
    c = split_indices(101, SplitSettings(shuffle=True, seed=4))
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    assert not np.array_equal(a["test"], c["test"])
    allidx = np.sort(np.concatenate(list(a.values())))
    np.testing.assert_array_equal(allidx, np.arange(101))
    assert not np.array_equal(a["train"], np.arange(len(a["train"])))


def test_bad_fractions():
    with pytest.raises(ValueError, match="sum"):
        split_indices(10, SplitSettings(fractions=(0.5, 0.1, 0.1)))


def test_split_file_round_trip_and_stale_check(tmp_path):
    s = split_indices(50)
    save_split(tmp_path / "s.json", s, SplitSettings())
    back = load_split(tmp_path / "s.json", 50)
    for k in s:
        np.testing.assert_array_equal(s[k], back[k])
    with pytest.raises(InputError, match="stale"):
        load_split(tmp_path / "s.json", 20)
