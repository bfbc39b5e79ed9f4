# Evaluation of every trained model.


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
