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
        # Outside the outputs, so that a failed or killed job keeps it and a retry resumes.
        checkpoint="results/checkpoints/pretrained/dft.npz",
    threads: config["compute"]["threads"]
    resources:
        **compute("gpu"),
    conda:
        CONDA_ENV
    script:
        "../scripts/pretrain.py"
