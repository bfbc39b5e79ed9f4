# Shared set-up: the package import path, config validation, the settings each job uses, and
# path helpers.
import os
import sys
from pathlib import Path

# Rules always run the package of this checkout, with or without an installed copy.
SRC = str(Path(workflow.basedir) / "src")
sys.path.insert(0, SRC)
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (SRC, os.environ.get("PYTHONPATH")) if p)

# passed on to jobs on other machines (cluster executors), where the scripts import the package
envvars:
    "PYTHONPATH",


from fusedmlp.config import ConfigError, subset, validate_config

try:
    _validated = validate_config(config, source=" + ".join(map(str, workflow.configfiles)) or "config")
except ConfigError as exc:
    raise WorkflowError(str(exc)) from None
config.clear()
config.update(_validated)

# JAX's persistent compilation cache, shared by every job (the scripts inherit the environment,
# also on cluster nodes, where each job re-reads this file). Even sub-second compiles are kept:
# the evaluation jobs are short runs whose time goes mostly to compiling.
if config["compute"]["jax_cache"]:
    os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(Path(config["compute"]["jax_cache"]).resolve()))
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")

CONDA_ENV = str(Path(workflow.basedir) / config["compute"]["conda_env"])
NAME = r"[A-Za-z0-9_-]+"

wildcard_constraints:
    stem=NAME,
    level=NAME,


# Trained models, each in results/<model>/model.npz: the pre-trained model, one per configured
# top-down scheme (the scheme list lives in config `schemes` only) and one per IBI correction
# (config `ibi.models`).
SCHEMES = list(config["schemes"])
IBI_MODELS = list(config["ibi"]["models"])
MODELS = ["pretrained"] + SCHEMES + IBI_MODELS
# Potentials the evaluation rules measure: the models and, in the demo, the reference potential
# that labelled their training data (its ground truth).
REFERENCE = "reference"
EVAL_MODELS = MODELS + ([REFERENCE] if config["evaluation"]["include_reference"]
                        and config["data"]["source"] == "reference" else [])
# The multi-fidelity model (workflow/rules/multifidelity.smk) has one head per level of theory and
# is evaluated at a head, `<model>@<head>` (results/multifidelity@ref_hard/): every evaluation rule
# accepts those names; the default DAG measures its test errors at each head and its 0 K elastic
# constants. It needs one dataset per level, which the reference source provides.
MULTIFIDELITY = "multifidelity"
MF_ENABLED = config["multifidelity"]["enabled"] and config["data"]["source"] == "reference"
HEAD_MODELS = [f"{MULTIFIDELITY}@{lvl}" for lvl in config["multifidelity"]["levels"]] if MF_ENABLED else []
COMPARISON_TABLES = ["elastic_hcp", "moduli", "targets", "lattice_temperature", "lattice_pressure", "phonons",
                     "liquid", "diffusion", "elastic_bcc", "test_errors",
                     "test_errors_by_type"] + (["rdf_fits"] if IBI_MODELS else [])
FIGURES = ["elastic_constants", "moduli", "lattice_temperature", "lattice_pressure", "phonons",
           "liquid_structure", "diffusion"]


# Data and training lie on the campaign's critical path: the scheduler starts them before the
# evaluation jobs of models that already exist (the reference potential's, in the demo).
CRITICAL_PATH = 10
# The jobs of g(r)-fitted models (the IBI target, IBI and DiffTRe on g(r)) feed only their own
# evaluations: below the top-down trainings, which would otherwise wait for a core (the demo's
# fused training was done after 20.4 min with train_ibi ahead of it, 13.7 min behind it), above
# the evaluation jobs.
SIDE_PATH = CRITICAL_PATH - 1


def settings(*keys):
    """The configuration a job uses (dotted keys), as one of its params: editing one of these keys
    reruns the job and what depends on it, editing any other key does not."""
    return subset(config, *keys)


# What every model's jobs need to build it: the species it knows and its parameter dtype.
MODEL_KEYS = ("species", "model")


def compute(kind):
    """Resources of one kind of job from config.compute."""
    return dict(config["compute"][kind])


def bottom_up_dataset():
    """The dataset the bottom-up trainer uses."""
    if config["data"]["source"] == "reference":
        return f"results/data/reference_{config['reference']['training_level']}.npz"
    return f"results/data/{config['data']['name']}.npz"


def dataset_stems():
    if config["data"]["source"] == "reference":
        return [f"reference_{lvl}" for lvl in config["reference"]["levels"]] + ([MULTIFIDELITY] if MF_ENABLED else [])
    return [config["data"]["name"]]


def ibi_reference_target(model):
    """The reference level IBI model ``model`` targets, or None for a table target."""
    target = config["ibi"]["models"][model]["target"]
    return target if target in config["reference"]["levels"] else None


# The reference levels that IBI models target (known answers): their liquid and diffusion are
# measured as `reference@<level>` (results/reference@ref_hard/diffusion.csv), beside the models
# fitted to their g(r), so the comparison gives the target's own density and D.
TARGET_LEVELS = (sorted({ibi_reference_target(m) for m in IBI_MODELS} - {None})
                 if config["data"]["source"] == "reference" else [])
TARGET_REFERENCES = [f"{REFERENCE}@{lvl}" for lvl in TARGET_LEVELS]
TARGET_PROPERTIES = ("liquid", "diffusion")


def ibi_target_table(model):
    """The g(r) table IBI model ``model`` fits: a reference level's, measured by `ibi_target`, or
    the configured table."""
    if ibi_reference_target(model):
        return f"results/{model}/target_rdf.csv"
    return config["ibi"]["models"][model]["target"]


def ibi_inputs(wildcards):
    """The target of an IBI model (``ibi_target_table``) and, for a reference level, its state."""
    if ibi_reference_target(wildcards.ibi):
        return {"target": ibi_target_table(wildcards.ibi), "target_state": f"results/{wildcards.ibi}/target_state.csv"}
    return {"target": ibi_target_table(wildcards.ibi)}


# ibi keys that only the pair-correction update reads, those only DiffTRe on g(r) reads, and those
# only the validation of an IBI model reads
IBI_UPDATE_KEYS = ("correction", "alpha", "alpha_ramp", "g_floor", "smoothing_passes", "max_update_kT",
                   "pressure_correction", "iterations", "tolerance", "average_last")
RDF_DIFFTRE_KEYS = ("difftre",)
IBI_VALIDATION_KEYS = ("validation_ps",)


def ibi_method(model):
    """How ``model`` of ``ibi.models`` is fitted to its g(r): "ibi" or "difftre"."""
    return config["ibi"]["models"][model].get("method", "ibi")


def ibi_settings(wildcards):
    """params of an IBI or DiffTRe-on-g(r) job: the ibi keys its method reads and its own entry
    (editing another model's entry, or the other method's keys, does not rerun it)."""
    name = wildcards.ibi
    skip = (RDF_DIFFTRE_KEYS if ibi_method(name) == "ibi" else IBI_UPDATE_KEYS) + IBI_VALIDATION_KEYS
    shared = [f"ibi.{k}" for k in config["ibi"] if k != "models" and k not in skip]
    if ibi_method(name) == "difftre":
        shared += [f"difftre.{k}" for k in ("b1", "b2", "patience", "reuse_ess", "selection_window")]
    return settings(*MODEL_KEYS, *shared, f"ibi.models.{name}")


def ibi_validation_settings(wildcards):
    """params of `validate_ibi`: the state point, its trajectories and `ibi.validation_ps` (the
    model file holds the correction; editing the update reruns this through the file)."""
    skip = IBI_UPDATE_KEYS + RDF_DIFFTRE_KEYS + ("target_sampling",)
    shared = [f"ibi.{k}" for k in config["ibi"] if k != "models" and k not in skip]
    return settings(*MODEL_KEYS, *shared, f"ibi.models.{wildcards.ibi}")


def model_file(wildcards):
    """The model a property job measures (none for the reference potential); `<model>@<head>` is
    the file of <model>."""
    model = wildcards.model.split("@")[0]
    return [] if model == REFERENCE else [f"results/{model}/model.npz"]


def errors_dataset(wildcards):
    """The labelled data a model's test errors are measured on: the multi-fidelity dataset (at
    the head's level) for `<model>@<head>`, the bottom-up dataset otherwise."""
    stem = "results/data/multifidelity" if "@" in wildcards.model else bottom_up_dataset()[:-len(".npz")]
    return {"dataset": f"{stem}.npz", "split": f"{stem}.split.json"}


# Outputs of each property job; `evaluate` runs evaluation.jobs.<property>.
PROPERTY_OUTPUTS = {
    "elastic_hcp": {"table": "elastic_hcp.csv"},
    "lattice_temperature": {"table": "lattice_temperature.csv"},
    "lattice_pressure": {"table": "lattice_pressure.csv"},
    "phonons": {"bands": "phonon_bands.csv", "dos": "phonon_dos.csv", "summary": "phonons.csv"},
    "liquid": {"rdf": "liquid_rdf.csv", "adf": "liquid_adf.csv", "summary": "liquid.csv"},
    "diffusion": {"table": "diffusion.csv"},
    "elastic_bcc": {"table": "elastic_bcc.csv"},
}

# Configuration each property job reads besides evaluation.<property> (diffusion melts its liquid
# as the liquid job does).
PROPERTY_KEYS = {"diffusion": ("evaluation.liquid",)}


def evaluation_settings(prop):
    """params of the property job: its section, the MD settings, the experimental tables it may
    interpolate in and, for the reference potential, the level of theory it is."""

    def keys(wildcards):
        extra = ()
        model, _, head = wildcards.model.partition("@")
        if model == REFERENCE:
            level = head or config["reference"]["training_level"]
            extra = ("reference.potential", "reference.element", "reference.training_level",
                     f"reference.levels.{level}")
        return settings(*MODEL_KEYS, "experiment", "evaluation.md", f"evaluation.{prop}",
                        *PROPERTY_KEYS.get(prop, ()), *extra)

    return keys


def property_outputs(prop, model="{model}"):
    return {k: f"results/{model}/{v}" for k, v in PROPERTY_OUTPUTS[prop].items()}


def evaluation_tables():
    """Every property table of every evaluated model, and the liquid and diffusion of the
    reference levels IBI models target, keyed ``<prop>__<model>__<name>``."""
    pairs = [(prop, m) for prop in PROPERTY_OUTPUTS for m in EVAL_MODELS]
    pairs += [(prop, m) for prop in TARGET_PROPERTIES for m in TARGET_REFERENCES]
    return {f"{prop}__{m}__{k}": path for prop, m in pairs for k, path in property_outputs(prop, m).items()}


def reference_tables():
    """User-supplied reference tables (evaluation.references) the tables and figures read."""
    return {f"reference_{k}": v for k, v in config["evaluation"]["references"].items() if v}


def all_targets():
    """Every product, each named: a deleted file is rebuilt by `snakemake` (with what depends on
    it); Snakemake leaves a missing file alone if only an up-to-date product names it."""
    stems = dataset_stems()
    return (
        expand("results/data/{stem}.npz", stem=stems)
        + expand("results/data/{stem}.split.json", stem=stems)
        + expand("results/data/{stem}.summary.md", stem=stems)
        + expand("results/data/{stem}.summary.png", stem=stems)
        + expand("results/{model}/model.npz", model=MODELS)
        + expand("results/{model}/training_curve.png", model=MODELS)
        + expand("results/{model}/test_errors.csv", model=MODELS)
        + expand("results/{model}/test_errors_by_type.csv", model=MODELS)
        + list(evaluation_tables().values())  # workflow/rules/evaluation.smk
        + expand("results/{model}/test_errors.md", model=MODELS)
        + expand("results/{model}/parity.png", model=MODELS)
        + expand("results/comparison/{name}.md", name=COMPARISON_TABLES)
        + expand("results/figures/{name}.png", name=FIGURES)
        + multifidelity_targets()  # workflow/rules/multifidelity.smk
    )


# --- multi-fidelity (workflow/rules/multifidelity.smk) ---------------------------------------------

_mf = config["multifidelity"]
MF_LEVELS = list(_mf["levels"])
MF_HIGH = _mf["high"]
# what a multi-fidelity training reads (the comparison's sizes and seeds are not among them)
MF_TRAINING_KEYS = tuple(f"multifidelity.{k}" for k in (
    "levels", "head_form", "correction_l2", "high", "epochs", "steps_per_epoch", "lr_start", "lr_end", "energy_per_atom",
    "virial_per_atom", "patience", "seed"))
MF_VARIANTS = ["high_energies", "high_energies_forces", "multifidelity"]


def mf_comparison_keys():
    """What a model of the comparison reads: the multi-fidelity training's keys, except the
    training length the comparison sets itself (`multifidelity.comparison.epochs`,
    `steps_per_epoch`; null: the section's), and (b)'s force weight."""
    own = {k for k in ("epochs", "steps_per_epoch") if _mf["comparison"][k] is not None}
    return (*(k for k in MF_TRAINING_KEYS if k.split(".")[-1] not in own),
            *(f"multifidelity.comparison.{k}" for k in ("epochs", "steps_per_epoch", "forces_weight")))


def mf_reference_keys():
    """The reference potential at every level of the multi-fidelity model (0 K elastic constants)."""
    return ("reference.potential", "reference.element", *(f"reference.levels.{lvl}" for lvl in MF_LEVELS))


def mf_comparison_models():
    """(variant, size, seed) of every model of the comparison: (a), (b) and (c) at the configured
    high-level size with every seed of `seeds`, (a) and (c) at the learning curve's other sizes
    with `curve_seeds`."""
    comp, size0 = _mf["comparison"], _mf["levels"][MF_HIGH]["train_size"]
    keys = [(v, size0, s) for v in MF_VARIANTS for s in comp["seeds"]]
    for n in sorted(set(comp["sizes"]) - {size0}):
        keys += [(v, n, s) for v in ("high_energies", "multifidelity") for s in comp["curve_seeds"]]
    return keys


def mf_model_path(variant, size, seed):
    return f"results/multifidelity_comparison/{variant}/n{size}/seed{seed}/model.npz"


def multifidelity_targets():
    """The multi-fidelity model and its evaluation in the default DAG (when enabled)."""
    if not MF_ENABLED:
        return []
    return (["results/multifidelity/model.npz", "results/multifidelity/training_curve.png",
             "results/multifidelity/elastic_0K.md"]
            + expand("results/{model}/{f}", model=HEAD_MODELS,
                     f=["test_errors.csv", "test_errors_by_type.csv", "test_errors.md", "parity.png"]))
