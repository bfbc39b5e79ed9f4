from pathlib import Path

import pytest

from fusedmlp.config import ConfigError, load_config, load_schema, validate_config

ROOT = Path(__file__).resolve().parents[1]


def test_defaults_fill_every_section():
    cfg = validate_config({})
    assert cfg["data"]["split"]["fractions"] == [0.7, 0.1, 0.2]
    assert cfg["reference"]["levels"]["ref_hard"]["alpha_scale"] == 1.05
    assert cfg["reference"]["levels"]["ref"] == {"alpha_scale": 1.0, "A_scale": 1.0, "length_scale": 1.0}


def test_demo_config_equals_the_schema_defaults():
    # config/config.yaml spells out the demo; the schema defaults are the same demo
    demo = load_config(ROOT / "config" / "config.yaml")
    assert demo == validate_config({})


def test_paper_config_is_valid_and_paper_scale():
    cfg = load_config(ROOT / "config" / "paper.yaml")
    assert cfg["data"]["source"] == "release"
    assert cfg["data"]["release"]["subdir"] == "Data DFT and EXP/DFT_data"
    assert cfg["data"]["release"]["url"].endswith("Data_DFT_and_Exp.zip")


@pytest.mark.parametrize("cfg, names", [
    ({"dataa": {}}, ["<top level>", "dataa"]),
    ({"data": {"split": {"fractons": [0.7, 0.1, 0.2]}}}, ["data.split", "fractons"]),
    ({"data": {"source": "vasp"}}, ["data.source", "vasp"]),
    ({"data": {"split": {"fractions": [0.7, 0.1]}}}, ["data.split.fractions"]),
    ({"data": {"split": {"fractions": [0.7, 0.2, 0.2]}}}, ["data.split.fractions", "sum to 1"]),
    ({"reference": {"training_level": "pbe"}}, ["reference.training_level", "pbe"]),
    ({"reference": {"levels": {"x": {"alpha_scale": -1}}}}, ["reference.levels.x.alpha_scale"]),
    ({"reference": {"sampling": {"phases": {"hcp": {"a": 2.9, "supercells": [[1, 1, 1]]}}}}},
     ["reference.sampling.phases.hcp", "covera"]),
    ({"species": ["ti"]}, ["species.0"]),
    ({"data": {"source": "release"}}, ["data.release", "neither path nor url"]),
    ({"data": {"source": "release", "release": {"url": "https://x/y.zip"}}}, ["data.release.sha256"]),
    ({"data": {"source": "ase"}}, ["data.ase.path"]),
    # issue 20
    ({"species": ["Ti", "Xx"], "data": {"source": "ase", "ase": {"path": "x.xyz"}}},
     ["species.1", "'Xx' is not a chemical symbol"]),
    ({"pretrain": {"lr_start": 1e-4, "lr_end": 1e-3}}, ["pretrain.lr_end", "above pretrain.lr_start"]),
    ({"difftre": {"lr_end": 0.01}}, ["difftre.lr_end", "difftre.lr_start"]),
    ({"fused": {"dft_lr_end": 0.01}}, ["fused.dft_lr_end", "fused.dft_lr_start"]),
    ({"difftre": {"equilibration_ps": 1.0}}, ["difftre.equilibration_ps", "no frame", "difftre.trajectory_ps"]),
    # shorter than the trajectory, but by less than one recording interval (40 fs)
    ({"difftre": {"trajectory_ps": 0.21, "equilibration_ps": 0.2}}, ["difftre.equilibration_ps", "no frame"]),
    ({"difftre": {"trajectory_ps": 0.4, "equilibration_ps": 0.2, "record_every_fs": 40.0}},
     ["difftre.born_directions", "5 frames per trajectory", "cover the 9 directions"]),
    # a pressure slope reads the normal block of the stiffness: 9 directions with C44, not 2
    ({"difftre": {"targets": ["C44", "pressure_c_slope"], "trajectory_ps": 0.4, "equilibration_ps": 0.2,
                  "record_every_fs": 100.0}},
     ["difftre.born_directions", "2 frames per trajectory", "cover the 9 directions"]),
    ({"difftre": {"temperatures": [323, 1500]}}, ["difftre.temperatures", "1500 K outside", "lattice_constants"]),
    ({"evaluation": {"elastic_hcp": {"temperatures": [323, 2000]}}},
     ["evaluation.elastic_hcp.temperatures", "2000 K outside", "4-973 K"]),
    ({"experiment": {"lattice_constants": "missing.csv"}}, ["experiment.lattice_constants", "missing.csv", "does not exist"]),
    # control variates fit per block: the demo's 1-ps runs are too short for them
    ({"evaluation": {"elastic_hcp": {"control_variates": True}}},
     ["evaluation.elastic_hcp.control_variates", "blocks of 0.25 ps and 12 frames", "2 ps and 30 frames"]),
    ({"evaluation": {"elastic_hcp": {"control_variates": True, "sampling": {  # long blocks, few frames
        "equilibration_ps": 0.2, "production_ps": 8.0, "record_every_fs": 500.0}}}},
     ["evaluation.elastic_hcp.control_variates", "blocks of 2 ps and 4 frames"]),
    ({"evaluation": {"elastic_hcp": {"control_variates": True, "sampling": {  # many frames, short blocks
        "equilibration_ps": 0.2, "production_ps": 1.0, "record_every_fs": 5.0}}}},
     ["evaluation.elastic_hcp.control_variates", "blocks of 0.25 ps and"]),
    # issue 19: IBI
    ({"ibi": {"correction": {"cutoff": 5.5}}}, ["ibi.correction.cutoff", "exceeds model.cutoff"]),
    ({"ibi": {"models": {"x": {"target": "nowhere.csv", "density_g_cm3": 4.0}}}},
     ["ibi.models.x.target", "neither a reference level", "nowhere.csv"]),
    ({"ibi": {"models": {"x": {"target": "resources/experiment/ti_liquid_rdf.csv"}}}},
     ["ibi.models.x.density_g_cm3", "needs the state point's density"]),
    ({"ibi": {"models": {"fused": {"target": "ref_hard"}}}}, ["ibi.models.fused", "distinct names"]),
    ({"ibi": {"pressure_correction": {"max_kT": 0.2}}}, ["ibi.pressure_correction.max_kT"]),
    ({"ibi": {"models": {"pretrained": {"target": "ref_hard"}}}}, ["ibi.models"]),
])
def test_invalid_configs_name_the_key(cfg, names):
    with pytest.raises(ConfigError) as err:
        validate_config(cfg, source="my.yaml")
    msg = str(err.value)
    assert msg.startswith("my.yaml")
    for n in names:
        assert n in msg, msg


def test_bad_yaml_file(tmp_path):
    (tmp_path / "c.yaml").write_text("data: [unclosed")
    with pytest.raises(ConfigError, match="c.yaml"):
        load_config(tmp_path / "c.yaml")


def _keys(node, prefix=""):
    for k, v in node.get("properties", {}).items():
        yield prefix + k
        yield from _keys(v, prefix + k + ".")
    extra = node.get("additionalProperties")
    if isinstance(extra, dict) and "properties" in extra:
        yield from _keys(extra, prefix + "<name>.")


def test_readme_documents_every_key():
    text = (ROOT / "config" / "README.md").read_text()
    keys = list(_keys(load_schema()))
    assert len(keys) > 40
    missing = [k for k in keys if f"`{k}`" not in text and f"`{k}." not in text]
    assert not missing, f"config/README.md does not document {missing}"


def test_schema_keys_have_defaults():
    def walk(node, prefix=""):
        for k, v in node.get("properties", {}).items():
            yield prefix + k, v
            yield from walk(v, prefix + k + ".")
    schema = load_schema()
    no_default = [k for k, v in walk(schema) if "default" not in v]
    assert not no_default, no_default


def test_subset_nests_the_named_keys_in_the_configurations_order():
    """A rule's params: only the named keys, nested as in the configuration and in its order
    (the demo's phases are sampled in turn from one random stream, so their order is a setting)."""
    from fusedmlp.config import subset

    cfg = validate_config({})
    sub = subset(cfg, "species", "reference.sampling.phases", "evaluation.md")
    assert sub == {"species": cfg["species"], "reference": {"sampling": {"phases": cfg["reference"]["sampling"]["phases"]}},
                   "evaluation": {"md": cfg["evaluation"]["md"]}}
    assert list(sub["reference"]["sampling"]["phases"]) == ["hcp", "bcc", "fcc"]
    sub["evaluation"]["md"]["timestep_fs"] = -1.0  # a copy: a job cannot change the campaign's settings
    assert cfg["evaluation"]["md"]["timestep_fs"] > 0
    with pytest.raises(KeyError, match="evaluation.phonon"):
        subset(cfg, "evaluation.phonon")


def test_cubic_phonons_need_their_starting_lattice():
    with pytest.raises(ConfigError, match="evaluation.phonons.start.a"):
        validate_config({"evaluation": {"phonons": {"structure": "bcc"}}})
    cfg = validate_config({"evaluation": {"phonons": {"structure": "bcc", "start": {"a": 3.3}}}})
    assert cfg["evaluation"]["phonons"]["start"] == {"a": 3.3, "covera": None}


def test_an_invalid_species_is_blamed_on_species(tmp_path):
    """Not on reference.element, which is a valid symbol that species then lacks."""
    with pytest.raises(ConfigError) as err:
        validate_config({"species": ["Xx"]}, source="my.yaml")
    assert "species.0: 'Xx' is not a chemical symbol" in str(err.value)
    assert "reference.element" not in str(err.value)


def test_evaluation_temperatures_all_must_lie_in_the_lattice_table(tmp_path):
    """'all' takes the elastic table's temperatures; the job interpolates the lattice there."""
    lattice = tmp_path / "lattice.csv"
    lattice.write_text("# test\nT_K,a_A,c_A\n4,2.94,4.67\n500,2.95,4.68\n")
    cfg = {"experiment": {"lattice_constants": str(lattice)}, "difftre": {"temperatures": [323]},
           "evaluation": {"elastic_hcp": {"temperatures": [323]}}}
    assert validate_config(cfg)
    with pytest.raises(ConfigError) as err:
        validate_config({**cfg, "evaluation": {"elastic_hcp": {"temperatures": "all"}}})
    assert "evaluation.elastic_hcp.temperatures: 523, 573" in str(err.value) and "4-500 K" in str(err.value)


def test_fused_dft_loss_takes_the_pretraining_weights_unless_overridden():
    from fusedmlp.training.schemes import fused_dft_settings
    cfg = validate_config({"pretrain": {"energy_weight": 7.0, "virial_weight": 2.0},
                           "fused": {"virial_weight": 0.25, "dft_lr_start": 2e-4, "dft_lr_end": 1e-4}})
    s = fused_dft_settings(cfg, epochs=3)
    assert (s.energy_weight, s.forces_weight, s.virial_weight) == (7.0, 1.0, 0.25)
    assert (s.lr_start, s.lr_end, s.epochs) == (2e-4, 1e-4, 3)
    paper = fused_dft_settings(load_config(ROOT / "config" / "paper.yaml"), epochs=1)
    assert paper.virial_weight == pytest.approx(3.724e-2) and paper.forces_weight == pytest.approx(9309.0)


def test_correction_ridge_needs_correction_heads():
    """A ridge on correction columns that independent heads lack would be a silent no-op."""
    with pytest.raises(ConfigError, match="multifidelity.correction_l2"):
        validate_config({"multifidelity": {"head_form": "independent", "correction_l2": 1.0}})
    assert validate_config({"multifidelity": {"head_form": "correction", "correction_l2": 1.0}})


def test_comparison_trains_for_its_own_length_and_the_demo_model_for_the_sections():
    """multifidelity.comparison.epochs / steps_per_epoch reach every variant of the comparison
    (all three the same), not the default multi-fidelity model; null takes the section's."""
    from fusedmlp.training.multifidelity_job import VARIANTS, multifidelity_settings
    cfg = validate_config({"multifidelity": {"epochs": 5, "steps_per_epoch": 7,
                                             "comparison": {"epochs": 3, "steps_per_epoch": 11}}})
    for variant in VARIANTS:
        s = multifidelity_settings(cfg, variant, size=10, seed=1, comparison=True)
        assert (s.epochs, s.steps_per_epoch) == (3, 11), variant
    demo = multifidelity_settings(cfg)
    assert (demo.epochs, demo.steps_per_epoch) == (5, 7)
    cfg = validate_config({"multifidelity": {"epochs": 5, "steps_per_epoch": 7,
                                             "comparison": {"epochs": None, "steps_per_epoch": 11}}})
    s = multifidelity_settings(cfg, "high_energies", size=10, seed=1, comparison=True)
    assert (s.epochs, s.steps_per_epoch) == (5, 11)
    with pytest.raises(ConfigError, match="multifidelity.comparison.steps_per_epoch"):
        validate_config({"multifidelity": {"comparison": {"steps_per_epoch": 0}}})
