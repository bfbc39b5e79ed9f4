import hashlib
import shutil
import zipfile

import numpy as np
import pytest
from ase import Atoms
from ase import units as ase_units
from ase.calculators.singlepoint import SinglePointCalculator
from ase.io import write as ase_write

from fusedmlp import units
from fusedmlp.data import dataset as D
from fusedmlp.data.readers import download, read_ase, read_release, write_release
from fusedmlp.io import InputError

SUB = "Data DFT and EXP/DFT_data"


@pytest.fixture
def equal_size(small_dataset):
    # the release format needs configurations of equal size
    n = small_dataset.n_atoms
    idx = [i for i in range(len(n)) if n[i] == n[0]]
    assert len(idx) >= 2
    return small_dataset.subset(idx)


def make_release(tmp_path, ds, zip_it=False, sub=SUB, types=None):
    folder = tmp_path / "release"
    write_release(folder / sub, ds, types=types)
    if not zip_it:
        return folder
    archive = tmp_path / "release.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for f in sorted((folder / sub).iterdir()):
            z.write(f, f"{sub}/{f.name}")
    shutil.rmtree(folder)
    return archive


@pytest.mark.parametrize("zip_it", [False, True])
def test_release_round_trip_exact(tmp_path, equal_size, zip_it):
    path = make_release(tmp_path, equal_size, zip_it)
    ds = read_release(path, species="Ti", fidelity="dft")
    np.testing.assert_array_equal(ds.positions, equal_size.positions)
    np.testing.assert_array_equal(ds.box, equal_size.box)
    np.testing.assert_array_equal(ds.energy, equal_size.energy)
    np.testing.assert_array_equal(ds.forces, equal_size.forces)
    np.testing.assert_array_equal(ds.virial_mask, equal_size.virial_mask)
    np.testing.assert_array_equal(ds.virial[ds.virial_mask], equal_size.virial[equal_size.virial_mask])
    assert set(ds.config_type.tolist()) <= {"init", "bulk"}
    assert np.all(ds.config_type[ds.virial_mask] == "init")
    assert ds.metadata["subdir"] == SUB
    assert all(str(path) in s for s in ds.source)


def test_release_unit_conversion_from_nm_and_kj_per_mol(tmp_path, equal_size):
    kj = 1.0 / units.KJ_PER_MOL  # kJ/mol per eV
    scaled = D.Dataset(**{**{f: getattr(equal_size, f) for f in equal_size.__dataclass_fields__},
                          "positions": equal_size.positions / 10.0, "box": equal_size.box / 10.0,
                          "energy": equal_size.energy * kj, "forces": equal_size.forces * kj * 10.0,
                          "virial": equal_size.virial * kj})
    folder = tmp_path / "nm"
    write_release(folder, scaled)
    ds = read_release(folder, species="Ti", length_unit="nm", energy_unit="kJ/mol")
    np.testing.assert_allclose(ds.positions, equal_size.positions, rtol=1e-14)
    np.testing.assert_allclose(ds.energy, equal_size.energy, rtol=1e-14)
    np.testing.assert_allclose(ds.forces, equal_size.forces, rtol=1e-14, atol=1e-14)
    np.testing.assert_allclose(ds.virial, equal_size.virial, rtol=1e-13, atol=1e-13)


def _edit(folder, name, fn):
    p = folder / SUB / name
    np.save(p, fn(np.load(p)))


@pytest.mark.parametrize("name, edit, field, message", [
    ("force.npy", None, "force.npy", "file missing"),
    ("energy.npy", lambda a: a[:-1], "energy.npy", "rows"),
    ("force.npy", lambda a: a[:, :-3], "force.npy", "atom count mismatch"),
    ("coord.npy", lambda a: a[:, :-1], "coord.npy", "3n columns"),
    ("energy.npy", lambda a: np.r_[a[:-1], np.nan], "energy.npy", "NaN"),
    ("force.npy", lambda a: np.where(np.arange(a.size).reshape(a.shape) == 5, np.inf, a), "force.npy", "NaN or inf"),
    ("box.npy", lambda a: np.r_[np.zeros((1, 9)), a[1:]], "box.npy", "singular"),
    ("box.npy", lambda a: np.r_[-a[:1], a[1:]], "box.npy", "left-handed"),
    ("coord.npy", lambda a: a * 100.0, "coord.npy", "outside the cell"),
    ("types.npy", lambda a: a + 7, "types.npy", "no name"),
])
def test_release_bad_input(tmp_path, equal_size, name, edit, field, message):
    folder = make_release(tmp_path, equal_size)
    if edit is None:
        (folder / SUB / name).unlink()
    else:
        _edit(folder, name, edit)
    with pytest.raises(InputError, match=message) as err:
        read_release(folder, species="Ti")
    assert err.value.field == field
    assert name in str(err.value)


def test_release_unknown_species_and_ambiguous_folders(tmp_path, equal_size):
    folder = make_release(tmp_path, equal_size)
    with pytest.raises(InputError, match="unknown species 'Xx'"):
        read_release(folder, species="Xx")
    write_release(folder / "other", equal_size)
    with pytest.raises(InputError, match="several folders"):
        read_release(folder, species="Ti")
    assert len(read_release(folder, species="Ti", subdir="other")) == len(equal_size)
    with pytest.raises(InputError, match="no folder 'missing'"):
        read_release(folder, species="Ti", subdir="missing")


def test_corrupt_zip(tmp_path, equal_size):
    archive = make_release(tmp_path, equal_size, zip_it=True)
    data = archive.read_bytes()
    (tmp_path / "truncated.zip").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="corrupt"):
        read_release(tmp_path / "truncated.zip", species="Ti")
    # flip bytes inside a stored member: CRC check must catch it
    with zipfile.ZipFile(archive) as z:
        info = z.getinfo(f"{SUB}/coord.npy")
    buf = bytearray(data)
    start = info.header_offset + 30 + len(info.filename) + 200
    buf[start:start + 8] = b"\x00\xff" * 4
    (tmp_path / "flipped.zip").write_bytes(bytes(buf))
    with pytest.raises(InputError, match="corrupt"):
        read_release(tmp_path / "flipped.zip", species="Ti")


def test_download_verifies_checksum_before_the_file_appears(tmp_path, equal_size):
    archive = make_release(tmp_path, equal_size, zip_it=True)
    sha = hashlib.sha256(archive.read_bytes()).hexdigest()
    dest = tmp_path / "dl" / "release.zip"
    with pytest.raises(InputError, match="checksum mismatch") as err:
        download(archive.as_uri(), dest, "0" * 64)
    assert err.value.field == "sha256"
    assert not dest.exists() and list(dest.parent.iterdir()) == []
    download(archive.as_uri(), dest, sha.upper())
    assert dest.read_bytes() == archive.read_bytes()
    with pytest.raises(InputError, match="download failed"):
        download((tmp_path / "absent.zip").as_uri(), tmp_path / "x.zip", sha)


def _atoms(cfg, with_stress=True):
    at = Atoms(numbers=cfg["species"], positions=cfg["positions"], cell=cfg["box"], pbc=True)
    volume = abs(np.linalg.det(cfg["box"]))
    stress = -cfg["virial"] / volume if with_stress else None
    res = dict(energy=cfg["energy"], forces=cfg["forces"])
    if with_stress:
        res["stress"] = stress
    at.calc = SinglePointCalculator(at, **res)
    at.info["config_type"] = cfg["config_type"]
    return at


def test_extxyz_round_trip_with_stress_to_virial(tmp_path, small_dataset):
    frames = [_atoms(small_dataset.config(i), with_stress=bool(small_dataset.virial_mask[i]))
              for i in range(len(small_dataset))]
    path = tmp_path / "data.extxyz"
    ase_write(path, frames, format="extxyz")
    ds = read_ase(path, fidelity="pbe", allowed_species=["Ti"])
    np.testing.assert_array_equal(ds.n_atoms, small_dataset.n_atoms)
    # extended XYZ stores 8 decimals
    np.testing.assert_allclose(ds.positions, small_dataset.positions, rtol=0, atol=1e-8)
    np.testing.assert_allclose(ds.energy, small_dataset.energy, rtol=1e-12)
    np.testing.assert_allclose(ds.forces, small_dataset.forces, rtol=0, atol=1e-8)
    np.testing.assert_array_equal(ds.virial_mask, small_dataset.virial_mask)
    m = ds.virial_mask
    # ASE stress (eV/Å³, tension positive) → virial (eV): W = −σV, exactly, from the values on file
    from ase.io import read as ase_read
    back = ase_read(path, index=":")
    expected = np.stack([-a.get_stress(voigt=False) * a.cell.volume for a, keep in zip(back, m) if keep])
    np.testing.assert_array_equal(ds.virial[m], expected)
    sym = 0.5 * (small_dataset.virial[m] + small_dataset.virial[m].transpose(0, 2, 1))
    np.testing.assert_allclose(ds.virial[m], sym, rtol=1e-6, atol=1e-6)
    assert ds.config_type.tolist() == small_dataset.config_type.tolist()
    assert set(ds.fidelity.tolist()) == {"pbe"}


def test_ase_reader_errors(tmp_path, small_dataset):
    with pytest.raises(InputError, match="does not exist"):
        read_ase(tmp_path / "none.xyz")
    mol = Atoms("Ti2", positions=[[0, 0, 0], [0, 0, 2.5]])
    mol.calc = SinglePointCalculator(mol, energy=-1.0, forces=np.zeros((2, 3)))
    ase_write(tmp_path / "mol.extxyz", mol, format="extxyz")
    with pytest.raises(InputError, match="periodic") as err:
        read_ase(tmp_path / "mol.extxyz")
    assert err.value.field == "cell"
    frames = [_atoms(small_dataset.config(0))]
    ase_write(tmp_path / "ti.extxyz", frames, format="extxyz")
    with pytest.raises(InputError, match="not among the configured species"):
        read_ase(tmp_path / "ti.extxyz", allowed_species=["Al"])
    (tmp_path / "garbage.extxyz").write_text("3\nnot a header\nTi 0 0\n")
    with pytest.raises(InputError, match="ASE could not read"):
        read_ase(tmp_path / "garbage.extxyz")


# --- issue 20: labels, physical ranges, pinned checksum, empty selections ---------------------------

def _write_frames(path, ds, energy=True, forces=True, stress=True, edit=None):
    """ds as extended XYZ; ``energy``/``forces``/``stress``: on every frame (True), none (False) or
    the frames listed; ``edit(i, atoms)`` changes frame i."""
    frames = []
    for i in range(len(ds)):
        c = ds.config(i)
        at = Atoms(numbers=c["species"], positions=c["positions"], cell=c["box"], pbc=True)
        res = {}
        for key, on, value in (("energy", energy, c["energy"]), ("forces", forces, c["forces"]),
                               ("stress", stress, -c["virial"] / abs(np.linalg.det(c["box"])))):
            if on is True or (on is not False and i in on):
                res[key] = value
        if edit is not None:
            edit(i, at, res)
        if res:
            at.calc = SinglePointCalculator(at, **res)
        frames.append(at)
    ase_write(path, frames, format="extxyz")
    return path


@pytest.mark.parametrize("kw, field, message", [
    (dict(energy=False), "energy", "no configuration has energy"),
    (dict(forces=False), "forces", "no configuration has forces"),
    (dict(stress=False), "virial", "no configuration has virial"),
    (dict(forces=[0, 2]), "forces", r"3 of 5 configurations have no forces \(configurations 1, 3, 4\)"),
    (dict(energy=[1, 2, 3, 4]), "energy", r"1 of 5 configurations have no energy \(configurations 0\)"),
])
def test_ase_missing_or_partial_labels_are_errors(tmp_path, small_dataset, kw, field, message):
    path = _write_frames(tmp_path / "d.extxyz", small_dataset, **kw)
    with pytest.raises(InputError, match=message) as err:
        read_ase(path)
    assert err.value.field == field and str(path) in str(err.value)
    assert "data.ase.labels" in str(err.value)


def test_ase_labels_a_level_does_not_have_are_declared(tmp_path, small_dataset, caplog):
    path = _write_frames(tmp_path / "d.extxyz", small_dataset, forces=False)
    ds = read_ase(path, labels=["energy", "virial"])
    assert not ds.forces_mask.any() and ds.energy_mask.all() and ds.virial_mask.all()
    # a label on file but declared absent is not used
    ds = read_ase(_write_frames(tmp_path / "e.extxyz", small_dataset), labels=["energy", "forces"])
    assert not ds.virial_mask.any() and ds.forces_mask.all()
    # virials on some frames only are legitimate: a warning with the count
    with caplog.at_level("WARNING"):
        ds = read_ase(_write_frames(tmp_path / "f.extxyz", small_dataset, stress=[0, 2, 4]))
    assert ds.virial_mask.tolist() == [True, False, True, False, True]
    assert "2 of 5 configurations have no virial" in caplog.text


@pytest.mark.parametrize("edit, field, message", [
    # stress in GPa written where ASE expects eV/Å³: ~160x too large
    (lambda i, at, res: res.update(stress=res["stress"] * units.EV_PER_A3_IN_GPA * 30), "virial", "GPa or kbar"),
    # positions in bohr in a cell in Å
    (lambda i, at, res: at.set_positions(at.positions / ase_units.Bohr), "positions", "bohr"),
    (lambda i, at, res: res.update(forces=res["forces"] * 964.85 + (100.0 if i == 3 else 0.0)), "forces", "kJ/mol"),
    (lambda i, at, res: res.update(energy=res["energy"] * 1000.0), "energy", "meV"),  # meV read as eV
])
def test_ase_unit_slips_stop_ingestion(tmp_path, small_dataset, edit, field, message):
    path = _write_frames(tmp_path / "d.extxyz", small_dataset, edit=edit)
    with pytest.raises(InputError, match=message) as err:
        read_ase(path)
    assert err.value.field == field and str(path) in str(err.value)
    assert "configuration" in err.value.message and "data.checks." in err.value.message
    # exotic data: the limit is configuration
    generous = D.Limits(min_distance_A=0.0, max_force_eV_A=1e6, max_stress_GPa=1e6, max_energy_spread_eV=1e6)
    assert len(read_ase(path, limits=generous)) == len(small_dataset)


def test_release_unit_slip_and_labels(tmp_path, equal_size):
    folder = make_release(tmp_path, equal_size)
    _edit(folder, "virial.npy", lambda a: a * 160.2 * 5)  # virial from a GPa·Å³ product
    with pytest.raises(InputError, match="stress component") as err:
        read_release(folder, species="Ti")
    assert err.value.field == "virial.npy" and "virial.npy" in str(err.value)
    # a level without forces or virials says so, and their files may be missing
    folder = make_release(tmp_path / "b", equal_size)
    (folder / SUB / "force.npy").unlink()
    (folder / SUB / "virial.npy").unlink()
    with pytest.raises(InputError, match="data.release.labels"):
        read_release(folder, species="Ti")
    ds = read_release(folder, species="Ti", labels=["energy"])
    assert ds.energy_mask.all() and not ds.forces_mask.any() and not ds.virial_mask.any()
    # virial listed but no configuration type keeps one
    folder = make_release(tmp_path / "c", equal_size)
    with pytest.raises(InputError, match="no configuration has virial"):
        read_release(folder, species="Ti", virial_types=[5])


def test_release_pinned_sha256_is_checked_for_a_local_path(tmp_path, equal_size):
    archive = make_release(tmp_path, equal_size, zip_it=True)
    sha = hashlib.sha256(archive.read_bytes()).hexdigest()
    assert read_release(archive, species="Ti", sha256=sha).metadata["sha256"] == sha
    with pytest.raises(InputError, match="checksum mismatch") as err:
        read_release(archive, species="Ti", sha256="0" * 64)
    assert err.value.field == "sha256" and str(archive) in str(err.value)
    folder = make_release(tmp_path / "f", equal_size)
    with pytest.raises(InputError, match="not a file"):
        read_release(folder, species="Ti", sha256=sha)


def test_empty_release_and_empty_selection_and_unknown_configured_species(tmp_path, equal_size, small_dataset):
    folder = make_release(tmp_path, equal_size)
    for name in ("box.npy", "coord.npy", "energy.npy", "force.npy", "virial.npy", "types.npy"):
        _edit(folder, name, lambda a: a[:0])
    with pytest.raises(InputError, match="no configurations") as err:
        read_release(folder, species="Ti")
    assert err.value.field == "box.npy"
    path = _write_frames(tmp_path / "d.extxyz", small_dataset)
    with pytest.raises(InputError, match="selects no frame") as err:
        read_ase(path, index="10:")
    assert err.value.field == "index" and str(path) in str(err.value)
    with pytest.raises(InputError, match="'Xx' is not a chemical symbol") as err:
        read_ase(path, allowed_species=["Ti", "Xx"])
    assert err.value.field == "species"
