# Shared set-up: the package import path, config validation, and path helpers.
import os
import sys
from pathlib import Path

# Rules always run the package of this checkout, with or without an installed copy.
SRC = str(Path(workflow.basedir) / "src")
sys.path.insert(0, SRC)
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (SRC, os.environ.get("PYTHONPATH")) if p)

from fusedmlp.config import ConfigError, validate_config

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


# Trained models, each in results/<model>/model.npz (later stages add theirs).
MODELS = ["pretrained", "sequential", "fused"]
# Potentials the evaluation rules measure: the models and, in the demo, the reference potential
# that labelled their training data (its ground truth).
REFERENCE = "reference"
EVAL_MODELS = MODELS + ([REFERENCE] if config["evaluation"]["include_reference"]
                        and config["data"]["source"] == "reference" else [])
COMPARISON_TABLES = ["elastic_hcp", "moduli", "lattice_temperature", "lattice_pressure", "phonons",
                     "liquid", "diffusion", "elastic_bcc", "test_errors"]
FIGURES = ["elastic_constants", "moduli", "lattice_temperature", "lattice_pressure", "phonons",
           "liquid_structure", "diffusion"]


# Data and training lie on the campaign's critical path: the scheduler starts them before the
# evaluation jobs of models that already exist (the reference potential's, in the demo).
CRITICAL_PATH = 10


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
        return [f"reference_{lvl}" for lvl in config["reference"]["levels"]]
    return [config["data"]["name"]]


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
        + list(evaluation_tables().values())  # workflow/rules/evaluation.smk
        + expand("results/{model}/test_errors.md", model=MODELS)
        + expand("results/{model}/parity.png", model=MODELS)
        + expand("results/comparison/{name}.md", name=COMPARISON_TABLES)
        + expand("results/figures/{name}.png", name=FIGURES)
    )
