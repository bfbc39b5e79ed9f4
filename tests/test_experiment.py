from pathlib import Path

import numpy as np
import pytest

from fusedmlp import experiment
from fusedmlp.config import validate_config
from fusedmlp.io import InputError

ROOT = Path(__file__).resolve().parents[1]
CFG = validate_config({})["experiment"]


def test_shipped_tables_load_with_citations():
    el = experiment.elastic_constants(ROOT / CFG["elastic_constants"])
    assert len(el) == 22 and el["T_K"].is_monotonic_increasing
    row = el.set_index("T_K").loc[323.0]
    assert (row["C11_GPa"], row["C33_GPa"], row["C44_GPa"]) == (160.9, 179.5, 46.2)
    lat = experiment.lattice_constants(ROOT / CFG["lattice_constants"])
    assert len(lat) == 22
    # c/a of experiment (≈1.587) is below the reference potential's 1.623: the demo's bias
    assert np.all(np.abs(lat["c_A"] / lat["a_A"] - 1.585) < 0.006)
    d = experiment.diffusion(ROOT / CFG["diffusion"])
    assert d["D_1e-9_m2_s"].iloc[0] == 5.3
    assert "Fisher" in experiment.citation(ROOT / CFG["elastic_constants"])
    assert "Meyer" in experiment.citation(ROOT / CFG["diffusion"])


def test_tables_do_not_depend_on_shared_folder():
    for key in ("elastic_constants", "lattice_constants", "diffusion"):
        assert CFG[key].startswith("resources/")


def test_bad_tables(tmp_path):
    p = tmp_path / "t.csv"
    p.write_text("# source\nT_K,a_A\n300,2.95\n")
    with pytest.raises(InputError, match="c_A") as err:
        experiment.lattice_constants(p)
    assert err.value.field == "c_A" and "t.csv" in str(err.value)
    p.write_text("T_K,a_A,c_A\n300,2.95,abc\n")
    with pytest.raises(InputError, match="line 2"):
        experiment.lattice_constants(p)
    with pytest.raises(InputError, match="does not exist"):
        experiment.lattice_constants(tmp_path / "none.csv")


def test_at_temperature_interpolates_and_names_the_setting_outside_the_table(tmp_path):
    p = tmp_path / "lat.csv"
    p.write_text("# source\nT_K,a_A,c_A\n300,2.950,4.680\n500,2.960,4.700\n")
    lat = experiment.lattice_constants(p)
    assert experiment.at_temperature(lat, p, "a_A", 350.0, "x.temperatures") == pytest.approx(2.9525)
    with pytest.raises(InputError, match=r"1000 K \(difftre.temperatures\) is outside the table \(300-500 K\)") as err:
        experiment.at_temperature(lat, p, "c_A", 1000.0, "difftre.temperatures")
    assert "lat.csv" in str(err.value) and err.value.field == "T_K"


def test_expansion_is_the_tables_logarithmic_derivative(tmp_path):
    """d ln c/dT at a row of an unevenly spaced table: exact for a quadratic c(T) (second-order
    differences); outside the table, the same error as the values'."""
    p = tmp_path / "lat.csv"
    t = np.array([300.0, 400.0, 600.0])
    c = 4.68 + 1e-7 * (t - 300) ** 2 + 2e-5 * (t - 300)
    p.write_text("T_K,a_A,c_A\n" + "".join(f"{ti:g},2.95,{ci:.12f}\n" for ti, ci in zip(t, c)))
    lat = experiment.lattice_constants(p)
    assert experiment.expansion_at(lat, p, "c_A", 400.0, "x") == pytest.approx((2e-7 * 100 + 2e-5) / c[1], rel=1e-6)
    assert abs(experiment.expansion_at(lat, p, "a_A", 500.0, "x")) < 1e-15
    with pytest.raises(InputError, match="difftre.temperatures"):
        experiment.expansion_at(lat, p, "c_A", 700.0, "difftre.temperatures")


@pytest.mark.parametrize("temperatures, lines", [((323, 4, 623), "line 4 has 323 K, line 5 4 K"),
                                                 ((4, 323, 323), "line 5 has 323 K, line 6 323 K")])
def test_table_out_of_temperature_order_or_repeating_one_is_rejected(tmp_path, temperatures, lines):
    """A descending table would give the 4 K values at 323 K; a repeated temperature would let the
    second row win. Both stop, naming the file lines."""
    path = tmp_path / "lattice.csv"
    path.write_text("# source: test\n# units: K, Å\nT_K,a_A,c_A\n"
                    + "".join(f"{t},2.95,4.68\n" for t in temperatures))
    with pytest.raises(InputError, match=f"lattice.csv \\[T_K\\].*{lines}"):
        experiment.lattice_constants(path)


def test_header_only_table_and_bad_value_name_the_file_line(tmp_path):
    path = tmp_path / "lattice.csv"
    path.write_text("# source: test\nT_K,a_A,c_A\n")
    with pytest.raises(InputError, match="no data rows"):
        experiment.lattice_constants(path)
    path.write_text("# source: test\nT_K,a_A,c_A\n4,2.95,4.68\n300,x,4.7\n")
    with pytest.raises(InputError, match=r"\[a_A\]: line 4: expected a finite number, got 'x'"):
        experiment.lattice_constants(path)
