# Bottom-up data: reference-potential generation or ingestion, splits and summaries.

if config["data"]["source"] == "reference":

    rule reference_configurations:
        output:
            "results/data/reference_configurations.npz",
        log:
            "results/logs/reference_configurations.log",
        params:
            settings=settings("reference.potential", "reference.element", "reference.sampling",
                              "reference.sampling_level",
                              f"reference.levels.{config['reference']['sampling_level']}"),
        threads: config["compute"]["threads"]
        priority: CRITICAL_PATH
        resources:
            **compute("cpu_heavy"),
        conda:
            CONDA_ENV
        script:
            "../scripts/reference_configurations.py"

    rule label_reference:
        input:
            "results/data/reference_configurations.npz",
        output:
            "results/data/reference_{level}.npz",
        log:
            "results/logs/label_reference_{level}.log",
        params:
            settings=lambda wc: settings("species", "reference.potential", "reference.element",
                                         "reference.virial_kinds", f"reference.levels.{wc.level}"),
        wildcard_constraints:
            level="|".join(config["reference"]["levels"]),
        threads: config["compute"]["threads"]
        priority: CRITICAL_PATH
        resources:
            **compute("cpu_heavy"),
        conda:
            CONDA_ENV
        script:
            "../scripts/label_reference.py"


if config["data"]["source"] == "release":
    _release = config["data"]["release"]

    if _release["path"] is None:

        rule download_release:
            output:
                archive="results/downloads/release.zip",
                checksum="results/downloads/release.zip.sha256",
            log:
                "results/logs/download_release.log",
            params:
                url=_release["url"],
                sha256=_release["sha256"],
            resources:
                **compute("light"),
            conda:
                CONDA_ENV
            script:
                "../scripts/download.py"

    rule ingest_release:
        input:
            _release["path"] or "results/downloads/release.zip",
        output:
            f"results/data/{config['data']['name']}.npz",
        log:
            f"results/logs/ingest_release_{config['data']['name']}.log",
        params:
            release=_release,
            species=config["species"],
            checks=config["data"]["checks"],
        resources:
            **compute("light"),
        conda:
            CONDA_ENV
        script:
            "../scripts/ingest_release.py"


if config["data"]["source"] == "ase":

    rule ingest_ase:
        input:
            config["data"]["ase"]["path"],
        output:
            f"results/data/{config['data']['name']}.npz",
        log:
            f"results/logs/ingest_ase_{config['data']['name']}.log",
        params:
            ase=config["data"]["ase"],
            species=config["species"],
            checks=config["data"]["checks"],
        resources:
            **compute("light"),
        conda:
            CONDA_ENV
        script:
            "../scripts/ingest_ase.py"


rule split:
    priority: CRITICAL_PATH
    input:
        "results/data/{stem}.npz",
    output:
        "results/data/{stem}.split.json",
    log:
        "results/logs/split_{stem}.log",
    params:
        split=config["data"]["split"],
    resources:
        **compute("light"),
    conda:
        CONDA_ENV
    script:
        "../scripts/split.py"


rule dataset_summary:
    input:
        dataset="results/data/{stem}.npz",
        split="results/data/{stem}.split.json",
    output:
        table="results/data/{stem}.summary.csv",
        markdown=report("results/data/{stem}.summary.md", category="Data", caption="../report/dataset_summary.rst"),
        figure=report("results/data/{stem}.summary.png", category="Data", caption="../report/dataset_figure.rst"),
    log:
        "results/logs/dataset_summary_{stem}.log",
    resources:
        **compute("light"),
    conda:
        CONDA_ENV
    script:
        "../scripts/dataset_summary.py"
