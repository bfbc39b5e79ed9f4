# Multi-fidelity training (Messerly et al. 2025): one dataset of the reference potential's levels
# of theory, a model with one head per level, its evaluation at each head (`<model>@<head>`), and
# the seed paper's comparison (one named target: `snakemake multifidelity_comparison`).

if MF_ENABLED:

    rule multifidelity_dataset:
        input:
            [f"results/data/reference_{lvl}.npz" for lvl in MF_LEVELS],
        output:
            "results/data/multifidelity.npz",
        log:
            "results/logs/multifidelity_dataset.log",
        params:
            settings=settings("species"),
        priority: CRITICAL_PATH
        resources:
            **compute("light"),
        conda:
            CONDA_ENV
        script:
            "../scripts/multifidelity_dataset.py"

    rule train_multifidelity:
        input:
            dataset="results/data/multifidelity.npz",
            split="results/data/multifidelity.split.json",
        output:
            model=f"results/{MULTIFIDELITY}/model.npz",
            log_csv=f"results/{MULTIFIDELITY}/training_log.csv",
            figure=report(f"results/{MULTIFIDELITY}/training_curve.png", category="Training",
                          caption="../report/multifidelity_curve.rst"),
        log:
            "results/logs/train_multifidelity.log",
        params:
            settings=settings(*MODEL_KEYS, *MF_TRAINING_KEYS),
            # outside the outputs, so that a failed or killed job keeps it and a retry resumes
            checkpoint=f"results/checkpoints/{MULTIFIDELITY}/multifidelity.npz",
            variant="multifidelity",
            size=None,
            seed=None,
            comparison=False,
        threads: config["compute"]["threads"]
        resources:
            **compute("gpu"),
        conda:
            CONDA_ENV
        script:
            "../scripts/train_multifidelity.py"

    rule multifidelity_elastic:
        input:
            model=f"results/{MULTIFIDELITY}/model.npz",
        output:
            table=f"results/{MULTIFIDELITY}/elastic_0K.csv",
            markdown=report(f"results/{MULTIFIDELITY}/elastic_0K.md", category="Multi-fidelity",
                            caption="../report/multifidelity_elastic.rst"),
        log:
            "results/logs/multifidelity_elastic.log",
        params:
            settings=settings(*MODEL_KEYS, *mf_reference_keys()),
            model=MULTIFIDELITY,
            levels=MF_LEVELS,
        threads: config["compute"]["threads"]
        resources:
            **compute("gpu"),
        conda:
            CONDA_ENV
        script:
            "../scripts/multifidelity_elastic.py"

    # One model of the comparison: (a) high_energies, (b) high_energies_forces, (c) multifidelity,
    # trained on `size` high-level structures with `seed`.
    rule train_multifidelity_variant:
        input:
            dataset="results/data/multifidelity.npz",
            split="results/data/multifidelity.split.json",
        output:
            model="results/multifidelity_comparison/{variant}/n{size}/seed{seed}/model.npz",
            log_csv="results/multifidelity_comparison/{variant}/n{size}/seed{seed}/training_log.csv",
        log:
            "results/logs/multifidelity_comparison/{variant}_n{size}_seed{seed}.log",
        wildcard_constraints:
            variant="|".join(MF_VARIANTS),
            size=r"\d+",
            seed=r"-?\d+",
        params:
            settings=settings(*MODEL_KEYS, *mf_comparison_keys()),
            checkpoint="results/checkpoints/multifidelity_comparison/{variant}_n{size}_seed{seed}.npz",
            variant=lambda wc: wc.variant,
            size=lambda wc: int(wc.size),
            seed=lambda wc: int(wc.seed),
            comparison=True,  # trained for the comparison's own length
        threads: config["compute"]["threads"]
        resources:
            **compute("gpu"),
        conda:
            CONDA_ENV
        script:
            "../scripts/train_multifidelity.py"

    rule multifidelity_comparison:
        input:
            models=[mf_model_path(*k) for k in mf_comparison_models()],
            dataset="results/data/multifidelity.npz",
            split="results/data/multifidelity.split.json",
        output:
            runs="results/multifidelity_comparison/runs.csv",
            table="results/multifidelity_comparison/comparison.csv",
            markdown=report("results/multifidelity_comparison/comparison.md", category="Multi-fidelity",
                            caption="../report/multifidelity_comparison.rst"),
            figure=report("results/figures/multifidelity_learning_curve.png", category="Multi-fidelity",
                          caption="../report/multifidelity_learning_curve.rst"),
        log:
            "results/logs/multifidelity_comparison.log",
        params:
            settings=settings(*MODEL_KEYS, "multifidelity.levels", "multifidelity.high", *mf_reference_keys()),
            runs=[list(k) for k in mf_comparison_models()],
        threads: config["compute"]["threads"]
        resources:
            **compute("gpu"),
        conda:
            CONDA_ENV
        script:
            "../scripts/multifidelity_comparison.py"
