# Evaluation of every trained model: one job per property and model, each a file a user can
# rebuild alone (`snakemake results/fused/elastic_hcp.csv`), then comparison tables and figures.


rule dft_errors:
    input:
        model="results/{model}/model.npz",
        dataset=bottom_up_dataset(),
        split=bottom_up_dataset().replace(".npz", ".split.json"),
    output:
        table="results/{model}/test_errors.csv",
        markdown=report("results/{model}/test_errors.md", category="Reference errors",
                        subcategory="{model}", caption="../report/test_errors.rst"),
        figure=report("results/{model}/parity.png", category="Reference errors",
                      subcategory="{model}", caption="../report/parity.rst"),
    log:
        "results/logs/dft_errors_{model}.log",
    wildcard_constraints:
        model="|".join(MODELS),
    threads: config["compute"]["threads"]
    resources:
        **compute("gpu"),
    conda:
        CONDA_ENV
    script:
        "../scripts/dft_errors.py"


def model_file(wildcards):
    """The model a property job measures (none for the reference potential)."""
    return [] if wildcards.model == REFERENCE else [f"results/{wildcards.model}/model.npz"]


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


def property_outputs(prop, model="{model}"):
    return {k: f"results/{model}/{v}" for k, v in PROPERTY_OUTPUTS[prop].items()}


# One rule per property (a rule name per property keeps `snakemake <rule>` and the logs readable);
# they differ only in their outputs and the job function they call.
for _prop in PROPERTY_OUTPUTS:

    rule:
        name:
            f"evaluate_{_prop}"
        input:
            model_file,
            elastic=config["experiment"]["elastic_constants"],
            lattice=config["experiment"]["lattice_constants"],
        output:
            **property_outputs(_prop),
        log:
            f"results/logs/{_prop}_{{model}}.log",
        wildcard_constraints:
            model="|".join(EVAL_MODELS),
        params:
            prop=_prop,
        threads: config["compute"]["threads"]
        resources:
            **compute("gpu"),
        conda:
            CONDA_ENV
        script:
            "../scripts/evaluate.py"


def evaluation_tables(models=None):
    models = models or EVAL_MODELS
    return {f"{prop}__{m}__{k}": path for prop in PROPERTY_OUTPUTS for m in models
            for k, path in property_outputs(prop, m).items()}


rule compare:
    input:
        unpack(lambda wc: evaluation_tables()),
        **{f"test_errors__{m}": f"results/{m}/test_errors.csv" for m in MODELS},
        elastic=config["experiment"]["elastic_constants"],
        lattice=config["experiment"]["lattice_constants"],
        diffusion=config["experiment"]["diffusion"],
    output:
        **{name: report(f"results/comparison/{name}.md", category="Comparison tables")
           for name in COMPARISON_TABLES},
        csv=expand("results/comparison/{name}.csv", name=COMPARISON_TABLES),
    log:
        "results/logs/compare.log",
    resources:
        **compute("light"),
    conda:
        CONDA_ENV
    script:
        "../scripts/compare.py"


rule figures:
    input:
        unpack(lambda wc: evaluation_tables()),
        elastic=config["experiment"]["elastic_constants"],
        lattice=config["experiment"]["lattice_constants"],
        diffusion=config["experiment"]["diffusion"],
    output:
        **{name: report(f"results/figures/{name}.png", category="Figures",
                        caption=f"../report/{name}.rst") for name in FIGURES},
    log:
        "results/logs/figures.log",
    resources:
        **compute("light"),
    conda:
        CONDA_ENV
    script:
        "../scripts/figures.py"
