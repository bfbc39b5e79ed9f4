"""The Snakemake workflow: DAG, config validation at parse time, profiles, and small real runs."""
import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import yaml

from fusedmlp.data import dataset as D
from fusedmlp.data.readers import write_release

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake"]


# the experimental tables by absolute path, for campaigns run in a temporary folder
EXPERIMENT = {k: str(ROOT / "resources/experiment" / f) for k, f in (
    ("elastic_constants", "ti_hcp_elastic_constants.csv"), ("lattice_constants", "ti_hcp_lattice_constants.csv"),
    ("diffusion", "ti_liquid_diffusion.csv"))}


def smk(*args, cwd=ROOT, check=True):
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    res = subprocess.run([*SNAKEMAKE, *args], cwd=cwd, capture_output=True, text=True, env=env)
    if check and res.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{res.stdout}\n{res.stderr}")
    return res


def dry_run_jobs(res):
    """Job names and counts from the dry-run's job-stats table."""
    table = res.stdout.split("Job stats:")[1].split("total")[0]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M)}


def test_default_dry_run_lists_the_dag():
    jobs = dry_run_jobs(smk("-n", "--forceall"))
    # four models (pre-trained, two DiffTRe schemes, IBI toward ref_hard's liquid, whose target
    # `ibi_target` measures); the reference potential only with evaluation.include_reference, but
    # the level IBI targets gets its liquid and diffusion measured (reference@ref_hard)
    evaluations = {f"evaluate_{p}": 4 + (p in ("liquid", "diffusion"))
                   for p in ("elastic_hcp", "lattice_temperature", "lattice_pressure", "phonons", "liquid",
                             "diffusion", "elastic_bcc")}
    # the multi-fidelity model: its dataset of both levels (split, summary), its training, its test
    # errors at each head (multifidelity@ref, multifidelity@ref_hard) and its 0 K elastic constants
    assert jobs == {"reference_configurations": 1, "label_reference": 2, "multifidelity_dataset": 1, "split": 3,
                    "dataset_summary": 3, "pretrain": 1, "train_top_down": 2, "ibi_target": 1, "train_ibi": 1,
                    "train_multifidelity": 1, "dft_errors": 6, "multifidelity_elastic": 1, **evaluations,
                    "compare": 1, "figures": 1, "all": 1}
    res = smk("-n", "--forceall")
    assert "results/reference@ref_hard/diffusion.csv" in res.stdout and "results/reference@ref_hard/liquid.csv" in res.stdout


def test_ibi_experiment_overlay_adds_a_table_target_model():
    """config/ibi_experiment.yaml adds `ibi_exp` (the measured g(r) as target: no target job) and
    `difftre_exp` (DiffTRe of the network on the same g(r)) to the demo's known-answer IBI model;
    all join every evaluation and the side-by-side table."""
    res = smk("-n", "--forceall", "--configfile", "config/ibi_experiment.yaml")
    jobs = dry_run_jobs(res)
    assert jobs["train_ibi"] == 2 and jobs["train_rdf_difftre"] == 1 and jobs["ibi_target"] == 1
    assert jobs["dft_errors"] == 8
    assert all(jobs[f"evaluate_{p}"] == 6 for p in ("elastic_hcp", "phonons"))
    assert all(jobs[f"evaluate_{p}"] == 7 for p in ("liquid", "diffusion"))  # and reference@ref_hard's
    for path in ("results/ibi_exp/model.npz", "results/difftre_exp/model.npz", "results/ibi/target_rdf.csv",
                 "results/comparison/rdf_fits.md"):
        assert path in res.stdout


def test_validation_overlay_keeps_the_three_models_of_the_fused_claim():
    """config/validation.yaml drops the IBI models (``ibi.models: null``) and the multi-fidelity
    model: pre-trained, sequential and fused, every evaluation, and the targets table."""
    res = smk("-n", "--forceall", "--configfile", "config/validation.yaml")
    jobs = dry_run_jobs(res)
    assert "train_ibi" not in jobs and "ibi_target" not in jobs and "train_multifidelity" not in jobs
    assert jobs["train_top_down"] == 2 and jobs["dft_errors"] == 3
    assert all(jobs[f"evaluate_{p}"] == 3 for p in ("elastic_hcp", "lattice_temperature", "liquid"))
    assert "results/comparison/targets.md" in res.stdout and "rdf_fits" not in res.stdout


def test_multifidelity_comparison_is_one_named_target_and_heads_are_evaluation_names():
    jobs = dry_run_jobs(smk("-n", "--forceall", "multifidelity_comparison"))
    # (a), (b), (c) with three seeds at the configured size, (a) and (c) at three more sizes
    assert jobs["train_multifidelity_variant"] == 9 + 2 * 3 and jobs["multifidelity_comparison"] == 1
    assert "train_multifidelity" not in jobs and "pretrain" not in jobs
    # any property rule measures a model at a head on request
    jobs = dry_run_jobs(smk("-n", "--forceall", "results/multifidelity@ref_hard/elastic_hcp.csv"))
    assert jobs["evaluate_elastic_hcp"] == 1 and jobs["train_multifidelity"] == 1


def test_ibi_validation_is_a_named_target():
    """The before/after validation of the IBI model is not in the demo's run, and the named target
    needs the IBI model and its target, not the evaluations."""
    jobs = dry_run_jobs(smk("-n", "--forceall", "ibi_validation"))
    assert jobs["validate_ibi"] == 1 and jobs["train_ibi"] == 1 and jobs["ibi_target"] == 1
    assert not any(j.startswith("evaluate_") for j in jobs)


@pytest.mark.slow  # ~30 s
def test_editing_the_validation_length_reruns_the_validation_alone(tmp_path):
    campaign = (tmp_path, touched_campaign(tmp_path, "all", "ibi_validation"))
    assert dry_run_with(campaign, {"ibi": {"validation_ps": 6.0}}) == {"validate_ibi": 1, "ibi_validation": 1}
    # a setting of the update retrains the model, and the validation measures the new one
    jobs = dry_run_with(campaign, {"ibi": {"alpha": 0.3}})
    assert jobs["train_ibi"] == 1 and jobs["validate_ibi"] == 1


def test_reference_potential_evaluated_on_request():
    """The overlay named in the README adds the reference potential to every property job and keeps
    the rest of the demo configuration."""
    jobs = dry_run_jobs(smk("-n", "--forceall", "--configfile", "config/with_reference.yaml"))
    assert all(jobs[f"evaluate_{p}"] == 5 for p in ("elastic_hcp", "phonons", "elastic_bcc"))
    assert jobs["evaluate_diffusion"] == 6  # and reference@ref_hard's, the IBI target level
    assert jobs["dft_errors"] == 6  # the reference potential has no test errors against itself
    assert jobs["train_top_down"] == 2 and jobs["reference_configurations"] == 1


def touched_campaign(folder, *targets):
    """A finished campaign in ``folder`` (the default targets, or ``targets``): every output present
    and recorded by Snakemake as made by the current code and settings (``--touch`` only touches
    existing files, in execution order). Returns the snakemake arguments that address it."""
    cfg = folder / "experiment.yaml"
    cfg.write_text(yaml.safe_dump({"experiment": EXPERIMENT}))
    # the targets first: `--configfile` takes every file name after it
    args = (*targets, "-s", str(ROOT / "Snakefile"), "-d", str(folder), "--configfile", str(cfg))
    plan = smk(*args, "-n", "--forceall").stdout
    outputs = [f.strip() for line in re.findall(r"^    output: (.*)$", plan, re.M) for f in line.split(",")]
    assert len(outputs) > 80
    for f in outputs:
        (folder / f).parent.mkdir(parents=True, exist_ok=True)
        (folder / f).touch()
    smk(*args, "--touch", "--forceall", "--cores", "1")
    assert "Nothing to be done" in smk(*args, "-n").stdout
    return args


@pytest.fixture(scope="module")
def finished_campaign(tmp_path_factory):
    folder = tmp_path_factory.mktemp("finished")
    return folder, touched_campaign(folder)


def dry_run_with(campaign, edit: dict):
    """Jobs `snakemake -n` plans on the finished campaign after editing the settings in ``edit``."""
    folder, args = campaign
    overlay = folder / f"edit_{abs(hash(json.dumps(edit, sort_keys=True)))}.yaml"
    overlay.write_text(yaml.safe_dump(edit, sort_keys=False))  # in the order a user writes them
    res = smk(*args, "-n", "--configfile", str(folder / "experiment.yaml"), str(overlay))
    return {} if "Nothing to be done" in res.stdout else dry_run_jobs(res)


PROPERTIES = ("elastic_hcp", "lattice_temperature", "lattice_pressure", "phonons", "liquid", "diffusion",
              "elastic_bcc")


def test_editing_a_training_setting_reruns_that_training_and_everything_downstream(finished_campaign):
    # the pre-trained model, the two top-down models and the IBI correction trained on top of it
    downstream = {**{f"evaluate_{p}": 4 for p in PROPERTIES}, "dft_errors": 4, "compare": 1, "figures": 1, "all": 1}
    assert dry_run_with(finished_campaign, {"pretrain": {"epochs": 16}}) == {
        "pretrain": 1, "train_top_down": 2, "train_ibi": 1, **downstream}
    # a DiffTRe setting: the two top-down models, not the pre-trained one
    jobs = dry_run_with(finished_campaign, {"difftre": {"lr_start": 3e-3}})
    assert jobs == {"train_top_down": 2, **{f"evaluate_{p}": 2 for p in PROPERTIES}, "dft_errors": 2,
                    "compare": 1, "figures": 1, "all": 1}
    # an IBI setting: the IBI model, not its target (the reference level's liquid)
    assert dry_run_with(finished_campaign, {"ibi": {"iterations": 6}}) == {
        "train_ibi": 1, **{f"evaluate_{p}": 1 for p in PROPERTIES}, "dft_errors": 1, "compare": 1, "figures": 1,
        "all": 1}
    # the IBI validation's length: read by the named target `ibi_validation` only
    assert dry_run_with(finished_campaign, {"ibi": {"validation_ps": 6.0}}) == {}
    # one scheme's own setting: that model only
    jobs = dry_run_with(finished_campaign, {"schemes": {"sequential": {"steps": ["exp"], "selection_dft_weight": 0.5},
                                                        "fused": {"steps": ["exp", "dft"], "selection_dft_weight": 1.0}}})
    assert jobs == {"train_top_down": 1, **{f"evaluate_{p}": 1 for p in PROPERTIES}, "dft_errors": 1,
                    "compare": 1, "figures": 1, "all": 1}


def test_editing_an_evaluation_setting_reruns_only_that_evaluation_and_the_products(finished_campaign):
    # four models and the IBI target level's own liquid (reference@ref_hard)
    assert dry_run_with(finished_campaign, {"evaluation": {"diffusion": {"max_lag_ps": 0.3}}}) == {
        "evaluate_diffusion": 5, "compare": 1, "figures": 1, "all": 1}
    # the IBI model, trained toward ref_hard's liquid (prepared as evaluation.liquid and run with
    # evaluation.md), is trained again, and everything measured of it
    ibi_model = {**{f"evaluate_{p}": 1 for p in PROPERTIES}, "ibi_target": 1, "train_ibi": 1, "dft_errors": 1}
    # the liquid's settings also melt the diffusion runs' liquid
    assert dry_run_with(finished_campaign, {"evaluation": {"liquid": {"melt_ps": 0.5}}}) == {
        **ibi_model, "evaluate_liquid": 5, "evaluate_diffusion": 5, "compare": 1, "figures": 1, "all": 1}
    assert dry_run_with(finished_campaign, {"evaluation": {"md": {"friction_per_ps": 5.0}}}) == {
        **ibi_model, **{f"evaluate_{p}": 4 + (p in ("liquid", "diffusion")) for p in PROPERTIES},
        "compare": 1, "figures": 1, "all": 1}


@pytest.mark.slow  # ~30 s; edits that rerun exactly their dependents are checked by the tests beside it
def test_editing_nothing_a_job_reads_reruns_nothing(finished_campaign):
    assert dry_run_with(finished_campaign, {}) == {}
    # the campaign's name and the compute resources are read by no job
    assert dry_run_with(finished_campaign, {"campaign": "renamed", "compute": {"threads": 2}}) == {}
    # the harder reference level labels its own dataset, which only the multi-fidelity model trains
    # on, and is the IBI model's target, whose own liquid and diffusion are measured too
    ibi_model = {**{f"evaluate_{p}": 1 + (p in ("liquid", "diffusion")) for p in PROPERTIES}, "ibi_target": 1,
                 "train_ibi": 1}
    assert dry_run_with(finished_campaign, {"reference": {"levels": {
        "ref": {}, "ref_hard": {"alpha_scale": 1.06, "A_scale": 0.9523809523809523, "length_scale": 0.995}}}}) == {
        **ibi_model, "label_reference": 1, "multifidelity_dataset": 1, "split": 2, "dataset_summary": 2,
        "train_multifidelity": 1, "dft_errors": 3, "multifidelity_elastic": 1, "compare": 1, "figures": 1, "all": 1}
    # the comparison's settings are not the default model's
    assert dry_run_with(finished_campaign, {"multifidelity": {"comparison": {"sizes": [5, 40]}}}) == {}
    assert dry_run_with(finished_campaign, {"multifidelity": {"comparison": {"steps_per_epoch": 30}}}) == {}


@pytest.mark.slow  # ~45 s
def test_the_comparisons_training_length_reruns_its_models_and_not_the_default_one(tmp_path):
    """multifidelity.comparison.steps_per_epoch (demo: set) is read by the comparison's 15 models
    only; multifidelity.steps_per_epoch then by the default model only; multifidelity.epochs
    (comparison.epochs null: the section's) by both."""
    campaign = (tmp_path, touched_campaign(tmp_path, "all", "multifidelity_comparison"))
    comparison = {"train_multifidelity_variant": 9 + 2 * 3, "multifidelity_comparison": 1}
    # the default model, its test errors at both heads and its 0 K elastic constants
    default_model = {"train_multifidelity": 1, "dft_errors": 2, "multifidelity_elastic": 1, "all": 1}
    assert dry_run_with(campaign, {"multifidelity": {"comparison": {"steps_per_epoch": 30}}}) == comparison
    assert dry_run_with(campaign, {"multifidelity": {"steps_per_epoch": 30}}) == default_model
    assert dry_run_with(campaign, {"multifidelity": {"epochs": 6}}) == {**comparison, **default_model}


@pytest.mark.slow  # ~35 s
def test_a_deleted_evaluation_output_rebuilds_only_that_job_and_its_dependents(tmp_path):
    """The README's promise: delete one property table of a finished campaign and `snakemake`
    reruns that job, the comparison tables and the figures, nothing else."""
    args = touched_campaign(tmp_path)
    (tmp_path / "results/fused/elastic_hcp.csv").unlink()
    assert dry_run_jobs(smk(*args, "-n")) == {"evaluate_elastic_hcp": 1, "compare": 1, "figures": 1, "all": 1}
    (tmp_path / "results/sequential/model.npz").unlink()  # a model: its evaluations follow
    jobs = dry_run_jobs(smk(*args, "-n"))
    assert jobs["train_top_down"] == 1 and jobs["dft_errors"] == 1 and jobs["evaluate_diffusion"] == 1
    assert "pretrain" not in jobs


def test_paper_config_dry_run_downloads_and_ingests():
    jobs = dry_run_jobs(smk("-n", "--forceall", "--configfile", "config/paper.yaml"))
    assert jobs["download_release"] == 1 and jobs["ingest_release"] == 1
    assert "reference_configurations" not in jobs


def test_invalid_config_fails_at_parse_time_naming_the_key():
    res = smk("-n", "--config", "campaing=x", check=False)
    assert res.returncode != 0
    assert "campaing" in res.stderr + res.stdout and "invalid configuration" in res.stderr + res.stdout


def test_slurm_profile_dry_run():
    res = smk("--profile", "slurm", "-n", "--forceall")
    assert "slurm" in res.stderr + res.stdout
    assert dry_run_jobs(res)["label_reference"] == 2


def _plugin_resource_names():
    import snakemake_executor_plugin_slurm as plugin

    src = "".join(p.read_text() for p in Path(plugin.__file__).parent.glob("*.py"))
    return set(re.findall(r'resources\.get\("(\w+)"', src))


def test_slurm_profile_names_existing_rules_and_resources():
    profile = yaml.safe_load((ROOT / "slurm" / "config.v9+.yaml").read_text())
    assert profile["executor"] == "slurm"
    rules = set(smk("--list-rules").stdout.split())
    rules |= set(smk("--list-rules", "--configfile", "config/paper.yaml").stdout.split())
    known = _plugin_resource_names() | {"mem_mb", "runtime", "disk_mb", "tmpdir"}
    assert {"slurm_partition", "slurm_account", "gpu", "gpu_model"} <= known
    for key in profile["default-resources"]:
        assert key in known, key
    for rule, res in profile["set-resources"].items():
        assert rule in rules, f"profile sets resources of unknown rule {rule}"
        for key in res:
            assert key in known, f"{rule}: unknown resource {key}"
    local = yaml.safe_load((ROOT / "profiles" / "default" / "config.v9+.yaml").read_text())
    assert "executor" not in local and "default-resources" not in local  # would override slurm


TINY_RUN = {"equilibration_ps": 0.02, "production_ps": 0.08, "record_every_fs": 8.0}


def tiny_config(tmp_path, **data):
    cfg = {
        "reference": {"sampling": {
            "phases": {"hcp": {"a": 2.94, "covera": 1.62, "supercells": [[2, 2, 1]]}},
            "strained": {"per_phase": 3}, "perturbed": {"per_phase": 3},
            "md": {"equilibration_steps": 20, "snapshots": 2, "interval_steps": 5,
                   "runs": [{"structure": "hcp", "supercell": [2, 2, 1], "temperatures": [500]}]}}},
        "data": {"split": {"fractions": [0.5, 0.25, 0.25]}, **data},
        "model": {"embed_size": 4, "out_embed_size": 4, "type_embed_size": 2, "int_embed_size": 2,
                  "basis_embed_size": 2, "n_blocks": 1, "n_output_layers": 1},
        "pretrain": {"epochs": 2, "batch_size": 4},
        "multifidelity": {"levels": {
            "ref": {"batch_size": 2},
            "ref_hard": {"train_size": 2, "batch_size": 2, "forces_weight": 0.0, "virial_weight": 0.0}},
            "epochs": 1, "steps_per_epoch": 2},
        "difftre": {"temperatures": [323], "supercell": [2, 2, 1], "epochs": 1, "trajectory_ps": 0.1,
                    # 10 frames: one Born direction each must cover the 9 the hexagonal targets read
                    "equilibration_ps": 0.02, "record_every_fs": 8.0, "batch_frames": 5},
        "evaluation": {
            "include_reference": True,
            "md": {"timestep_fs": 2.0},
            "elastic_hcp": {"temperatures": [323], "supercell": [2, 2, 1], "sampling": TINY_RUN},
            "lattice_temperature": {"temperatures": [323], "supercell": [2, 2, 1], "sampling": TINY_RUN},
            "lattice_pressure": {"pressures_gpa": [0, 5], "supercell": [2, 2, 1], "sampling": TINY_RUN},
            "phonons": {"supercell": [2, 2, 1], "band_points": 3, "dos_mesh": [4, 4, 4]},
            "liquid": {"supercell": [2, 2, 2], "melt_ps": 0.04, "npt_ps": 0.04, "sampling": TINY_RUN,
                       "rdf_r_max": 3.0, "rdf_bins": 20, "adf_cutoff": 3.0, "adf_bins": 18},
            "diffusion": {"temperatures": [2400], "supercell": [2, 2, 2], "max_lag_ps": 0.02, "n_blocks": 2,
                          "sampling": {**TINY_RUN, "record_every_fs": 4.0}},
            "elastic_bcc": {"supercell": [2, 2, 2], "npt_ps": 0.04, "sampling": TINY_RUN}},
        "experiment": EXPERIMENT,
    }
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


BOTTOM_UP = ["results/pretrained/test_errors.md", "results/pretrained/training_curve.png",
             "results/data/reference_ref.summary.md", "results/data/reference_ref_hard.summary.md"]


def test_tiny_reference_campaign_runs(tmp_path):
    cfg = tiny_config(tmp_path)
    smk("-s", str(ROOT / "Snakefile"), "-d", str(tmp_path), "--configfile", str(cfg), "--cores", "2",
        *BOTTOM_UP)
    ref = D.load(tmp_path / "results/data/reference_ref.npz")
    hard = D.load(tmp_path / "results/data/reference_ref_hard.npz")
    assert len(ref) == 1 + 3 + 3 + 2
    np.testing.assert_array_equal(ref.positions, hard.positions)  # same configurations ...
    assert not np.allclose(ref.forces, hard.forces)  # ... another level of theory
    assert set(ref.fidelity) == {"ref"} and set(hard.fidelity) == {"ref_hard"}
    assert ref.virial_mask.all()  # the reference potential's virials are exact: MD snapshots keep theirs
    split = json.loads((tmp_path / "results/data/reference_ref.split.json").read_text())
    assert [len(split[k]) for k in ("train", "val", "test")] == [5, 2, 2]
    assert (tmp_path / "results/data/reference_ref.summary.png").stat().st_size > 10_000
    assert "MD hcp" in (tmp_path / "results/logs/reference_configurations.log").read_text()
    # pre-training and its test errors ran on these data
    log = (tmp_path / "results/logs/pretrain.log").read_text()
    assert "epoch 2/2" in log and "ETA" in log
    errors = (tmp_path / "results/pretrained/test_errors.csv").read_text().splitlines()
    assert errors[0].startswith("model,dataset,split") and len(errors) == 2
    _errors_match_the_model_api(tmp_path, ref, split["test"])
    # the finished job removed its checkpoint: a forced retraining starts afresh
    assert not (tmp_path / "results/checkpoints/pretrained/dft.npz").exists()


def _job_processes(script: str) -> list[int]:
    """PIDs of running rule jobs whose script is ``script`` (Snakemake runs a copy under
    .snakemake/scripts/)."""
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, ValueError):
            continue
        if proc.name.isdigit() and ".snakemake/scripts/" in cmd and cmd.rstrip().endswith(script):
            pids.append(int(proc.name))
    return pids


def _kill_job_when(args, script, log, pattern, timeout=900):
    """Run snakemake and kill -9 the job running ``script`` once ``log`` shows ``pattern`` (as a
    node failure or the OOM killer would); snakemake itself notices and ends."""
    import signal
    import time

    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.Popen([*SNAKEMAKE, *args], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + timeout
    try:
        while time.time() < deadline:
            if log.exists() and re.search(pattern, log.read_text()):
                pids = _job_processes(script)
                assert pids, f"no running job of {script}"
                for pid in pids:
                    os.kill(pid, signal.SIGKILL)
                proc.wait(timeout=120)
                return
            assert proc.poll() is None, f"snakemake ended before {pattern!r} appeared in {log}"
            time.sleep(0.2)
        raise AssertionError(f"{pattern!r} did not appear in {log} within {timeout} s")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)


@pytest.mark.slow  # ~2 min: the tiny campaign's pre-training and fused training, each killed and rerun
def test_a_killed_training_job_resumes_when_snakemake_runs_again(tmp_path):
    """kill -9 of the job during pre-training and during the fused training (after a finished
    epoch), then `snakemake` again: the job resumes from its checkpoint, losing at most the epoch
    in progress, and ends with every epoch in its log."""
    cfg = tiny_config(tmp_path)
    longer = tmp_path / "longer.yaml"
    # tiny epochs take milliseconds: enough of them that the kill lands mid-run
    longer.write_text(yaml.safe_dump({"pretrain": {"epochs": 400, "patience": 1000}, "difftre": {"epochs": 3}}))
    args = ("-s", str(ROOT / "Snakefile"), "-d", str(tmp_path), "--cores", "1", "--configfile", str(cfg), str(longer))
    for target, log, script, epochs in (("results/pretrained/model.npz", "pretrain", "pretrain.py", 400),
                                        ("results/fused/model.npz", "train_fused", "train_top_down.py", 3)):
        log_path = tmp_path / "results/logs" / f"{log}.log"
        _kill_job_when((target, *args), script, log_path, rf"epoch 1/{epochs} ")
        assert not (tmp_path / target).exists()
        smk(target, *args)
        text = log_path.read_text()
        done = [int(m) for m in re.findall(r"resuming from \S+ after epoch (\d+)", text)]
        assert done and done[0] >= 1, text[-2000:]
        rows = (tmp_path / target).parent.joinpath("training_log.csv").read_text().splitlines()
        assert [int(r.split(",")[0]) for r in rows[1:]] == list(range(1, epochs + 1))
        assert not list((tmp_path / "results/checkpoints").rglob("*.npz"))  # removed once done


def _errors_match_the_model_api(tmp_path, ds, test_idx):
    """dft_errors' table equals RMSEs recomputed here through the public model API (host neighbour
    table, not the trainer's padded batches) on the test configurations."""
    import pandas as pd
    from fusedmlp.model.api import Potential

    pot = Potential.load(tmp_path / "results/pretrained/model.npz")
    de, df, dw = [], [], []
    for i in test_idx:
        c = ds.config(i)
        u, f, w = pot(c["positions"], c["box"], c["species"])
        n = len(c["positions"])
        de.append((u - c["energy"]) / n)
        df.append((f - c["forces"]).ravel())
        if c["virial_mask"]:
            dw.append(((w - c["virial"]) / n).ravel())
    row = pd.read_csv(tmp_path / "results/pretrained/test_errors.csv").iloc[0]
    rmse = lambda x: 1e3 * np.sqrt(np.mean(np.concatenate([np.atleast_1d(v) for v in x]) ** 2))
    assert row["configurations"] == len(test_idx)
    np.testing.assert_allclose(row["energy_rmse_meV_atom"], rmse(de), rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(row["forces_rmse_meV_A"], rmse(df), rtol=1e-3)
    if dw:
        np.testing.assert_allclose(row["virial_rmse_meV_atom"], rmse(dw), rtol=1e-3)
    assert row["n_virial"] == len(dw)


@pytest.mark.slow  # ~15 min: compiling DiffTRe's third-order derivatives and 28 evaluation jobs
def test_tiny_campaign_top_down_rules(tmp_path):
    cfg = tiny_config(tmp_path)
    smk("-s", str(ROOT / "Snakefile"), "-d", str(tmp_path), "--configfile", str(cfg), "--cores", "2")
    # the top-down schemes started from the pre-trained model, and every model has its test errors
    for scheme in ("sequential", "fused"):
        rows = (tmp_path / f"results/{scheme}/training_log.csv").read_text().splitlines()
        assert "323K_C44" in rows[0] and len(rows) == 2
        assert (tmp_path / f"results/{scheme}/test_errors.csv").exists()
    # every model (and the reference potential) evaluated, compared and plotted
    moduli = (tmp_path / "results/comparison/moduli.csv").read_text()
    for model in ("pretrained", "sequential", "fused", "reference"):
        assert f"\n{model}," in moduli
    for fig in ("elastic_constants", "moduli", "lattice_temperature", "lattice_pressure", "phonons",
                "liquid_structure", "diffusion"):
        assert (tmp_path / f"results/figures/{fig}.png").stat().st_size > 10_000
    # the multi-fidelity model: test errors at each head, 0 K elastic constants at each head and level
    for level in ("ref", "ref_hard"):
        assert (tmp_path / f"results/multifidelity@{level}/test_errors.csv").read_text().count("\n") == 2
    elastic = (tmp_path / "results/multifidelity/elastic_0K.csv").read_text()
    for name in ("reference@ref", "reference@ref_hard", "multifidelity@ref", "multifidelity@ref_hard"):
        assert f"\n{name}," in elastic
    # deleting one evaluation output reruns that job and what depends on it, nothing else
    (tmp_path / "results/fused/elastic_hcp.csv").unlink()
    jobs = dry_run_jobs(smk("-s", str(ROOT / "Snakefile"), "-d", str(tmp_path), "--configfile", str(cfg), "-n"))
    assert jobs == {"evaluate_elastic_hcp": 1, "compare": 1, "figures": 1, "all": 1}


def _release_zip(tmp_path, ds, corrupt=False):
    sub = tmp_path / "rel" / "DFT_data"
    write_release(sub, ds)
    if corrupt:
        e = np.load(sub / "energy.npy")
        e[0] = np.nan
        np.save(sub / "energy.npy", e)
    archive = tmp_path / ("bad.zip" if corrupt else "release.zip")
    with zipfile.ZipFile(archive, "w") as z:
        for f in sub.iterdir():
            z.write(f, f"DFT_data/{f.name}")
    return archive


def test_release_ingestion_rule_and_bad_release(tmp_path, small_dataset):
    ds = small_dataset.subset([i for i in range(len(small_dataset))
                               if small_dataset.n_atoms[i] == small_dataset.n_atoms[0]])
    good = _release_zip(tmp_path, ds)
    cfg = tiny_config(tmp_path, source="release", name="dft",
                      release={"path": str(good), "species": "Ti"})
    smk("-s", str(ROOT / "Snakefile"), "-d", str(tmp_path), "--configfile", str(cfg), "--cores", "1",
        "results/data/dft.split.json")
    out = D.load(tmp_path / "results/data/dft.npz")
    np.testing.assert_array_equal(out.energy, ds.energy)

    bad = _release_zip(tmp_path, ds, corrupt=True)
    work = tmp_path / "badrun"
    work.mkdir()
    cfg = tiny_config(work, source="release", name="dft", release={"path": str(bad), "species": "Ti"})
    res = smk("-s", str(ROOT / "Snakefile"), "-d", str(work), "--configfile", str(cfg), "--cores", "1",
              "results/data/dft.npz", check=False)
    assert res.returncode != 0
    log = (work / "results/logs/ingest_release_dft.log").read_text()
    assert "energy.npy" in log and "NaN" in log
    assert not (work / "results/data/dft.npz").exists()
    assert not list((work / "results").rglob("*.tmp*"))


def test_ingestion_checks_labels_units_and_the_pinned_checksum_and_logs_per_dataset(tmp_path, small_dataset):
    """Issue 20: a release given by a local path is checked against its pinned sha256; an extxyz with
    a label missing, or with a unit slip, stops with the file and field named in the dataset's own
    log (each ingestion logs to results/logs/ingest_<source>_<name>.log) and writes nothing."""
    from ase.calculators.singlepoint import SinglePointCalculator
    from ase.io import write as ase_write
    from fusedmlp.structures import crystal

    ds = small_dataset.subset([i for i in range(len(small_dataset))
                               if small_dataset.n_atoms[i] == small_dataset.n_atoms[0]])
    good = _release_zip(tmp_path, ds)

    def run(work, name, **data):
        work.mkdir()
        cfg = tiny_config(work, name=name, **data)
        res = smk("-s", str(ROOT / "Snakefile"), "-d", str(work), "--configfile", str(cfg), "--cores", "1",
                  f"results/data/{name}.npz", check=False)
        assert res.returncode != 0
        assert not (work / f"results/data/{name}.npz").exists()
        return res

    work = tmp_path / "pinned"
    run(work, "pbe", source="release", release={"path": str(good), "species": "Ti", "sha256": "0" * 64})
    log = (work / "results/logs/ingest_release_pbe.log").read_text()
    assert f"{good} [sha256]: checksum mismatch" in log

    def frames(forces=True, stress_unit=1.0):
        out = []
        for i in range(len(ds)):
            c = ds.config(i)
            at = crystal("Ti", "hcp", 2.94, 1.623, (2, 2, 1))
            at.positions, at.cell = c["positions"], c["box"]
            res = {"energy": c["energy"], "stress": -c["virial"] / abs(np.linalg.det(c["box"])) * stress_unit}
            if forces:
                res["forces"] = c["forces"]
            at.calc = SinglePointCalculator(at, **res)
            out.append(at)
        return out

    work = tmp_path / "ase"
    xyz = tmp_path / "no_forces.extxyz"
    ase_write(xyz, frames(forces=False), format="extxyz")
    run(work, "pbe", source="ase", ase={"path": str(xyz)})
    gpa = tmp_path / "gpa.extxyz"
    ase_write(gpa, frames(stress_unit=160.2 * 5), format="extxyz")
    (work / "tiny.yaml").write_text((work / "tiny.yaml").read_text().replace("name: pbe", "name: pbe_gpa")
                                    .replace(str(xyz), str(gpa)))
    smk("-s", str(ROOT / "Snakefile"), "-d", str(work), "--configfile", str(work / "tiny.yaml"), "--cores", "1",
        "results/data/pbe_gpa.npz", check=False)
    first = (work / "results/logs/ingest_ase_pbe.log").read_text()
    assert f"{xyz} [forces]: no configuration has forces" in first and "data.ase.labels" in first
    second = (work / "results/logs/ingest_ase_pbe_gpa.log").read_text()
    assert f"{gpa} [virial]: configuration " in second and "GPa or kbar read as eV/Å³" in second
    assert not (work / "results/data/pbe_gpa.npz").exists()
    # declaring that this level has no forces ingests it
    work = tmp_path / "declared"
    work.mkdir()
    cfg = tiny_config(work, source="ase", name="pbe", ase={"path": str(xyz), "labels": ["energy", "virial"]})
    smk("-s", str(ROOT / "Snakefile"), "-d", str(work), "--configfile", str(cfg), "--cores", "1",
        "results/data/pbe.npz")
    assert not D.load(work / "results/data/pbe.npz").forces_mask.any()


def test_parse_time_checks_of_experimental_ranges_and_difftre_frames(tmp_path):
    """Issue 20 item 8: caught by a dry run, before any job (the experimental tables are read from
    the working directory, as the jobs read them)."""
    for settings, names in (({"difftre": {"temperatures": [323, 1500]}}, ["difftre.temperatures", "1500 K"]),
                            ({"evaluation": {"elastic_hcp": {"temperatures": [2000]}}},
                             ["evaluation.elastic_hcp.temperatures", "2000 K"]),
                            ({"difftre": {"trajectory_ps": 0.1, "equilibration_ps": 0.1}},
                             ["difftre.equilibration_ps", "no frame"])):
        cfg = tmp_path / "c.yaml"
        cfg.write_text(yaml.safe_dump(settings))
        res = smk("-n", "--configfile", str(cfg), check=False)
        assert res.returncode != 0
        out = res.stdout + res.stderr
        assert "invalid configuration" in out and all(n in out for n in names), out
        assert "Traceback" not in out
