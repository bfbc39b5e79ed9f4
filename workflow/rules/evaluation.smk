# Evaluation of every trained model: one job per property and model, each a file a user can
# rebuild alone (`snakemake results/fused/elastic_hcp.csv`), then comparison tables and figures.


rule dft_errors:
    input:
        model_file,
        unpack(errors_dataset),
    output:
        table="results/{model}/test_errors.csv",
        by_type="results/{model}/test_errors_by_type.csv",
        markdown=report("results/{model}/test_errors.md", category="Reference errors",
                        subcategory="{model}", caption="../report/test_errors.rst"),
        figure=report("results/{model}/parity.png", category="Reference errors",
                      subcategory="{model}", caption="../report/parity.rst"),
    log:
        "results/logs/dft_errors_{model}.log",
    wildcard_constraints:
        model="|".join(MODELS + HEAD_MODELS),
    params:
        settings=settings(*MODEL_KEYS),
    threads: config["compute"]["threads"]
    resources:
        **compute("gpu"),
    conda:
        CONDA_ENV
    script:
        "../scripts/dft_errors.py"


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
            model="|".join(EVAL_MODELS + HEAD_MODELS + TARGET_REFERENCES),
        params:
            prop=_prop,
            settings=evaluation_settings(_prop),
        threads: config["compute"]["threads"]
        resources:
            **compute("gpu"),
        conda:
            CONDA_ENV
        script:
            "../scripts/evaluate.py"


rule compare:
    input:
        unpack(lambda wc: evaluation_tables()),
        **{f"test_errors__{m}": f"results/{m}/test_errors.csv" for m in MODELS},
        **{f"test_errors_by_type__{m}": f"results/{m}/test_errors_by_type.csv" for m in MODELS},
        **{f"ibi_target__{m}": ibi_target_table(m) for m in IBI_MODELS},
        elastic=config["experiment"]["elastic_constants"],
        lattice=config["experiment"]["lattice_constants"],
        diffusion=config["experiment"]["diffusion"],
        **reference_tables(),
    output:
        **{name: report(f"results/comparison/{name}.md", category="Comparison tables")
           for name in COMPARISON_TABLES},
        csv=expand("results/comparison/{name}.csv", name=COMPARISON_TABLES),
    log:
        "results/logs/compare.log",
    params:
        settings=settings("experiment", "evaluation.references", "ibi.models", "difftre.temperatures"),
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
        **reference_tables(),
    output:
        **{name: report(f"results/figures/{name}.png", category="Figures",
                        caption=f"../report/{name}.rst") for name in FIGURES},
    log:
        "results/logs/figures.log",
    params:
        settings=settings("experiment", "evaluation.references", "evaluation.liquid.temperature"),
    resources:
        **compute("light"),
    conda:
        CONDA_ENV
    script:
        "../scripts/figures.py"
