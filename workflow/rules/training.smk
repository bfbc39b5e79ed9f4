# Training: bottom-up pre-training on the DFT (or reference) labels.


rule pretrain:
    input:
        dataset=bottom_up_dataset(),
        split=bottom_up_dataset().replace(".npz", ".split.json"),
    output:
        model="results/pretrained/model.npz",
        log_csv="results/pretrained/training_log.csv",
        figure=report("results/pretrained/training_curve.png", category="Training",
                      caption="../report/training_curve.rst"),
    log:
        "results/logs/pretrain.log",
    params:
        settings=settings(*MODEL_KEYS, "pretrain"),
        # Outside the outputs, so that a failed or killed job keeps it and a retry resumes.
        checkpoint="results/checkpoints/pretrained/dft.npz",
    threads: config["compute"]["threads"]
    priority: CRITICAL_PATH
    resources:
        **compute("gpu"),
    conda:
        CONDA_ENV
    script:
        "../scripts/pretrain.py"


# Top-down training with DiffTRe from the pre-trained model: EXP only (sequential) or alternating
# with the DFT trainer (fused). The DFT data also give the validation loss for model selection.
rule train_top_down:
    input:
        model="results/pretrained/model.npz",
        dataset=bottom_up_dataset(),
        split=bottom_up_dataset().replace(".npz", ".split.json"),
        elastic=config["experiment"]["elastic_constants"],
        lattice=config["experiment"]["lattice_constants"],
    output:
        model="results/{scheme}/model.npz",
        log_csv="results/{scheme}/training_log.csv",
        figure=report("results/{scheme}/training_curve.png", category="Training",
                      caption="../report/top_down_curve.rst"),
    log:
        "results/logs/train_{scheme}.log",
    wildcard_constraints:
        scheme="|".join(SCHEMES),
    params:
        settings=lambda wc: settings(*MODEL_KEYS, "pretrain", "difftre", "fused", "experiment",
                                     f"schemes.{wc.scheme}"),
        checkpoint="results/checkpoints/{scheme}/top_down.npz",
    threads: config["compute"]["threads"]
    priority: CRITICAL_PATH
    resources:
        **compute("gpu"),
    conda:
        CONDA_ENV
    script:
        "../scripts/train_top_down.py"


# The names the issue tracker and users know: `snakemake train_sequential`, `train_fused`, ...
for _scheme in SCHEMES:

    rule:
        name:
            f"train_{_scheme}"
        input:
            rules.train_top_down.output.model.format(scheme=_scheme),


# The known-answer target of an IBI model whose target is a reference level: that level's liquid
# at the IBI state point (g(r), zero-pressure density, diffusion).
rule ibi_target:
    output:
        rdf="results/{ibi}/target_rdf.csv",
        state="results/{ibi}/target_state.csv",
    log:
        "results/logs/ibi_target_{ibi}.log",
    wildcard_constraints:
        ibi="|".join(m for m in IBI_MODELS if ibi_reference_target(m)) or "^$",
    params:
        # what `ibi_reference_target` reads: editing the IBI's update or iterations keeps the target
        settings=lambda wc: settings(
            *MODEL_KEYS, f"ibi.models.{wc.ibi}", "ibi.temperature", "ibi.supercell", "ibi.target_sampling",
            "ibi.rdf_r_max", "ibi.rdf_bin_A", "reference.potential", "reference.element",
            f"reference.levels.{ibi_reference_target(wc.ibi)}", "evaluation.md", "evaluation.liquid"),
    threads: config["compute"]["threads"]
    priority: SIDE_PATH
    resources:
        **compute("gpu"),
    conda:
        CONDA_ENV
    script:
        "../scripts/ibi_target.py"


# Iterative Boltzmann Inversion: the pre-trained model plus a pair correction fitted to a target
# g(r) (config `ibi`); `snakemake results/<name>/model.npz` for one model of `ibi.models`.
rule train_ibi:
    input:
        unpack(ibi_inputs),
        model="results/pretrained/model.npz",
    output:
        model="results/{ibi}/model.npz",
        log_csv="results/{ibi}/training_log.csv",
        rdf_csv="results/{ibi}/ibi_rdf.csv",
        correction_csv="results/{ibi}/ibi_correction.csv",
        figure=report("results/{ibi}/training_curve.png", category="Training",
                      caption="../report/ibi_curve.rst"),
    log:
        "results/logs/train_ibi_{ibi}.log",
    wildcard_constraints:
        ibi="|".join(m for m in IBI_MODELS if ibi_method(m) == "ibi") or "^$",
    params:
        settings=ibi_settings,
        checkpoint="results/checkpoints/{ibi}/ibi.npz",
    threads: config["compute"]["threads"]
    priority: SIDE_PATH
    resources:
        **compute("gpu"),
    conda:
        CONDA_ENV
    script:
        "../scripts/train_ibi.py"


# The before/after measurement of an IBI model, outside `all` (2.5 min in the demo): the start
# model and the kept correction each sampled for `ibi.validation_ps`. `snakemake ibi_validation`
# for every IBI model, `snakemake results/<name>/ibi_validation.csv` for one.
rule validate_ibi:
    input:
        unpack(ibi_inputs),
        model="results/{ibi}/model.npz",
    output:
        table="results/{ibi}/ibi_validation.csv",
        rdf="results/{ibi}/ibi_validation_rdf.csv",
        figure=report("results/{ibi}/ibi_validation.png", category="Training",
                      caption="../report/ibi_validation.rst"),
    log:
        "results/logs/validate_ibi_{ibi}.log",
    wildcard_constraints:
        ibi="|".join(m for m in IBI_MODELS if ibi_method(m) == "ibi") or "^$",
    params:
        settings=ibi_validation_settings,
    threads: config["compute"]["threads"]
    priority: SIDE_PATH
    resources:
        **compute("gpu"),
    conda:
        CONDA_ENV
    script:
        "../scripts/validate_ibi.py"


rule ibi_validation:
    input:
        expand("results/{ibi}/ibi_validation.csv", ibi=[m for m in IBI_MODELS if ibi_method(m) == "ibi"]),


# The same g(r) target as DiffTRe on the whole network (ibi.models.<name>.method: difftre): the
# side-by-side alternative to IBI, at the IBI's state point with its trajectories.
rule train_rdf_difftre:
    input:
        unpack(ibi_inputs),
        model="results/pretrained/model.npz",
    output:
        model="results/{ibi}/model.npz",
        log_csv="results/{ibi}/training_log.csv",
        figure=report("results/{ibi}/training_curve.png", category="Training",
                      caption="../report/rdf_difftre_curve.rst"),
    log:
        "results/logs/train_rdf_difftre_{ibi}.log",
    wildcard_constraints:
        ibi="|".join(m for m in IBI_MODELS if ibi_method(m) == "difftre") or "^$",
    params:
        settings=ibi_settings,
        checkpoint="results/checkpoints/{ibi}/rdf_difftre.npz",
    threads: config["compute"]["threads"]
    priority: SIDE_PATH
    resources:
        **compute("gpu"),
    conda:
        CONDA_ENV
    script:
        "../scripts/train_rdf_difftre.py"
