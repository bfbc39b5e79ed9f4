import dataclasses
import os

import numpy as np
import pytest

from fusedmlp.data import dataset as D
from fusedmlp.io import InputError


def assert_same(a: D.Dataset, b: D.Dataset):
    for f in dataclasses.fields(D.Dataset):
        x, y = getattr(a, f.name), getattr(b, f.name)
        if f.name == "metadata":
            assert x == y
        else:
            np.testing.assert_array_equal(x, y, err_msg=f.name)


def test_save_load_round_trip_is_exact(tmp_path, small_dataset):
    path = tmp_path / "d.npz"
    D.save(path, small_dataset)
    back = D.load(path)
    assert_same(small_dataset, back)
    assert back.n_atoms.tolist() == [4, 4, 4, 4, 4] or len(set(back.n_atoms.tolist())) > 1
    assert back.virial_mask.tolist() == [True, False, True, False, True]
    assert list(os.listdir(tmp_path)) == ["d.npz"]  # no temporary files left behind


def test_ragged_configuration_access(small_dataset):
    assert len(set(small_dataset.n_atoms.tolist())) > 1
    for i in range(len(small_dataset)):
        c = small_dataset.config(i)
        assert c["positions"].shape == (small_dataset.n_atoms[i], 3)
        assert c["source"] == f"fixture#{i}"
    sub = small_dataset.subset([3, 1])
    np.testing.assert_array_equal(sub.config(0)["forces"], small_dataset.config(3)["forces"])
    np.testing.assert_array_equal(sub.config(1)["positions"], small_dataset.config(1)["positions"])
    both = D.concatenate([small_dataset.subset([0]), small_dataset.subset([1, 2])])
    np.testing.assert_array_equal(both.positions, small_dataset.subset([0, 1, 2]).positions)


def test_failed_save_keeps_previous_file(tmp_path, small_dataset, monkeypatch):
    path = tmp_path / "d.npz"
    D.save(path, small_dataset)
    before = path.read_bytes()

    def broken(fh, **arrays):
        fh.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez_compressed", broken)
    with pytest.raises(OSError, match="disk full"):
        D.save(path, small_dataset.subset([0]))
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["d.npz"]


def _broken(ds, **changes):
    return dataclasses.replace(ds, **changes)


@pytest.mark.parametrize("field, mutate, message", [
    ("positions", lambda d: {"positions": np.where(np.arange(len(d.positions))[:, None] == 2, np.nan, d.positions)}, "NaN or inf"),
    ("energy", lambda d: {"energy": np.r_[np.inf, d.energy[1:]]}, "NaN or inf"),
    ("forces", lambda d: {"forces": np.r_[d.forces[:-1], [[0, np.nan, 0]]]}, "NaN or inf"),
    ("box", lambda d: {"box": np.r_[d.box[:1] * [[1], [1], [0]], d.box[1:]]}, "singular"),
    ("box", lambda d: {"box": np.r_[d.box[:1, ::-1], d.box[1:]]}, "left-handed"),
    ("positions", lambda d: {"positions": d.positions + np.r_[[[0, 0, 500.0]], np.zeros((len(d.positions) - 1, 3))]}, "outside the cell"),
    ("species", lambda d: {"species": np.r_[d.species[:-1], 200]}, "not an atomic number"),
    ("energy", lambda d: {"energy": d.energy[:-1]}, "one per configuration"),
    ("forces", lambda d: {"forces": d.forces[:-1]}, "expected shape"),
])
def test_validation_names_field(small_dataset, field, mutate, message):
    bad = _broken(small_dataset, **mutate(small_dataset))
    with pytest.raises(InputError, match=message) as err:
        D.validate(bad, "some/file.npz")
    assert err.value.field == field
    assert "some/file.npz" in str(err.value)


def test_masked_out_labels_may_be_anything_but_are_stored_as_given(small_dataset):
    # virial of configuration 1 is masked out: a NaN there is not an error
    w = small_dataset.virial.copy()
    w[1] = np.nan
    D.validate(_broken(small_dataset, virial=w), "x")
    w[0] = np.nan
    with pytest.raises(InputError, match="virial"):
        D.validate(_broken(small_dataset, virial=w), "x")


def test_unknown_species_for_the_campaign(small_dataset):
    with pytest.raises(InputError, match=r"\['Ti'\] are not among the configured species \['Zr'\]"):
        D.validate(small_dataset, "x", allowed_species=["Zr"])


def test_load_rejects_missing_and_corrupt_files(tmp_path, small_dataset):
    with pytest.raises(InputError, match="does not exist"):
        D.load(tmp_path / "nope.npz")
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(InputError, match="not a readable dataset"):
        D.load(tmp_path / "bad.npz")
    arrays = {"positions": small_dataset.positions}
    np.savez(tmp_path / "partial.npz", **arrays)
    with pytest.raises(InputError, match="missing"):
        D.load(tmp_path / "partial.npz")


def test_summary_counts(small_dataset):
    rows = D.summary(small_dataset)
    assert sum(r["configurations"] for r in rows) == len(small_dataset)
    assert sum(r["with_virial"] for r in rows) == int(small_dataset.virial_mask.sum())


def test_results_are_written_with_the_ordinary_file_mode(tmp_path):
    """Atomic writes go through a private temporary file; the result must still be readable by
    the group and others as the umask allows (a shared cluster project reads each other's results)."""
    from fusedmlp.io import save_npz, write_text

    old = os.umask(0o022)
    try:
        write_text(tmp_path / "table.csv", "a\n1\n")
        save_npz(tmp_path / "model.npz", x=np.zeros(2))
    finally:
        os.umask(old)
    for name in ("table.csv", "model.npz"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o644, name


def test_a_write_clears_the_temporary_file_a_killed_writer_left(tmp_path):
    from fusedmlp.io import write_text

    (tmp_path / ".table.csv.abc123.tmp.csv").write_text("half")  # left by a kill -9
    (tmp_path / ".other.csv.abc123.tmp.csv").write_text("not ours")
    write_text(tmp_path / "table.csv", "a\n1\n")
    assert sorted(f.name for f in tmp_path.iterdir()) == [".other.csv.abc123.tmp.csv", "table.csv"]
