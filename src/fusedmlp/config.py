"""Campaign configuration: schema validation with defaults.

The schema (``schemas/config.schema.yaml``) is the single description of every key; the
Snakefile, the scripts and the tests all validate through ``validate_config``, so an unknown key
or a bad value fails at parse time with a message naming the file and the key.
"""

from __future__ import annotations

import copy
from importlib import resources
from pathlib import Path

import jsonschema
import yaml
from ase.data import atomic_numbers


class ConfigError(ValueError):
    pass


def load_schema() -> dict:
    text = resources.files("fusedmlp").joinpath("schemas/config.schema.yaml").read_text()
    return yaml.safe_load(text)


def _resolve(schema: dict, root: dict) -> dict:
    while "$ref" in schema:
        ref = schema["$ref"]
        assert ref.startswith("#/"), ref
        target = root
        for part in ref[2:].split("/"):
            target = target[part]
        schema = {**target, **{k: v for k, v in schema.items() if k != "$ref"}}
    return schema


def fill_defaults(instance, schema: dict, root: dict | None = None):
    """Insert schema defaults into ``instance`` (recursively), in place; returns it."""
    root = schema if root is None else root
    schema = _resolve(schema, root)
    if isinstance(instance, dict):
        props = schema.get("properties", {})
        for key, sub in props.items():
            sub = _resolve(sub, root)
            if key not in instance and "default" in sub:
                instance[key] = copy.deepcopy(sub["default"])
        extra = schema.get("additionalProperties")
        for key, value in instance.items():
            if key in props:
                fill_defaults(value, props[key], root)
            elif isinstance(extra, dict):
                fill_defaults(value, extra, root)
    elif isinstance(instance, list) and isinstance(schema.get("items"), dict):
        for item in instance:
            fill_defaults(item, schema["items"], root)
    return instance


def _describe(err: jsonschema.ValidationError) -> str:
    path = ".".join(str(p) for p in err.absolute_path) or "<top level>"
    if err.validator == "additionalProperties":
        allowed = sorted(err.schema.get("properties", {}))
        return f"{path}: {err.message}; allowed keys: {allowed}"
    return f"{path}: {err.message}"


def validate_config(config: dict, source: str = "config") -> dict:
    """Return a validated deep copy of ``config`` with every default filled in."""
    schema = load_schema()
    cfg = fill_defaults(copy.deepcopy(dict(config)), schema)
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(cfg), key=lambda e: list(e.absolute_path))
    if errors:
        raise ConfigError(f"{source}: invalid configuration\n  "
                          + "\n  ".join(_describe(e) for e in errors))
    if cfg["ibi"]["models"] is None:  # an overlay's way to drop the IBI models
        cfg["ibi"]["models"] = {}
    _check_consistency(cfg, source)
    return cfg


def _check_multifidelity(cfg: dict, fail) -> None:
    """Levels of the multi-fidelity trainer are levels of the reference potential; the high level
    is one of them, and the learning rate decays."""
    m = cfg["multifidelity"]
    if m["lr_end"] > m["lr_start"]:
        fail("multifidelity.lr_end", f"{m['lr_end']:g} is above multifidelity.lr_start = {m['lr_start']:g}: "
                                     "the learning rate decays from start to end (swapped?)")
    if m["correction_l2"] > 0 and m["head_form"] != "correction":
        fail("multifidelity.correction_l2", f"{m['correction_l2']:g} needs head_form: correction (the "
             f"independent heads have no correction columns to keep small)")
    if m["high"] not in m["levels"]:
        fail("multifidelity.high", f"{m['high']!r} is not one of multifidelity.levels {list(m['levels'])}")
    if m["levels"][m["high"]]["train_size"] is None:
        fail(f"multifidelity.levels.{m['high']}.train_size", "the high level needs a training size: the "
             "comparison's table is taken at it (null - all - leaves no size)")
    if cfg["data"]["source"] == "reference":
        for level in m["levels"]:
            if level not in cfg["reference"]["levels"]:
                fail(f"multifidelity.levels.{level}",
                     f"{level!r} is not one of reference.levels {sorted(cfg['reference']['levels'])}")


def _check_consistency(cfg: dict, source: str) -> None:
    """Cross-key rules that a JSON schema cannot state."""
    def fail(key, msg):
        raise ConfigError(f"{source}: invalid configuration\n  {key}: {msg}")

    for i, symbol in enumerate(cfg["species"]):
        if atomic_numbers.get(symbol, 0) == 0:
            fail(f"species.{i}", f"{symbol!r} is not a chemical symbol")
    for key, start, end in (("pretrain", "lr_start", "lr_end"), ("difftre", "lr_start", "lr_end"),
                            ("fused", "dft_lr_start", "dft_lr_end")):
        if cfg[key][end] > cfg[key][start]:
            fail(f"{key}.{end}", f"{cfg[key][end]:g} is above {key}.{start} = {cfg[key][start]:g}: "
                                 "the learning rate decays from start to end (swapped?)")
    _check_difftre_frames(cfg["difftre"], fail)
    _check_control_variates(cfg["evaluation"]["elastic_hcp"], cfg["evaluation"]["md"]["timestep_fs"], fail)
    _check_experimental_range(cfg, fail)
    fr = cfg["data"]["split"]["fractions"]
    if abs(sum(fr) - 1.0) > 1e-9:
        fail("data.split.fractions", f"must sum to 1, got {fr} (sum {sum(fr):g})")
    ref = cfg["reference"]
    for key in ("training_level", "sampling_level"):
        if ref[key] not in ref["levels"]:
            fail(f"reference.{key}", f"{ref[key]!r} is not one of reference.levels {sorted(ref['levels'])}")
    for name, ph in ref["sampling"]["phases"].items():
        if name == "hcp" and "covera" not in ph:
            fail(f"reference.sampling.phases.{name}", "hcp needs covera (initial c/a)")
    for i, run in enumerate(ref["sampling"]["md"]["runs"]):
        if run["structure"] not in ref["sampling"]["phases"]:
            fail(f"reference.sampling.md.runs.{i}.structure",
                 f"{run['structure']!r} is not among the sampled phases {sorted(ref['sampling']['phases'])}")
    _check_ibi(cfg, fail)
    _check_multifidelity(cfg, fail)
    ph = cfg["evaluation"]["phonons"]
    if ph["structure"] != "hcp" and ph["start"]["a"] is None:
        fail("evaluation.phonons.start.a", f"a {ph['structure']} lattice needs its starting lattice constant (Å)")
    src = cfg["data"]["source"]
    if src == "reference" and ref["element"] not in cfg["species"]:
        fail("reference.element", f"{ref['element']!r} is not among species {cfg['species']}")
    if src == "release":
        rel = cfg["data"]["release"]
        if rel["path"] is None and rel["url"] is None:
            fail("data.release", "source is 'release' but neither path nor url is set")
        if rel["path"] is None and rel["sha256"] is None and not rel["trust_on_first_use"]:
            fail("data.release.sha256", "a download needs the expected sha256 checksum "
                                        "(or trust_on_first_use: true to record it)")
        if rel["species"] not in cfg["species"]:
            fail("data.release.species", f"{rel['species']!r} is not among species {cfg['species']}")
    if src == "ase" and cfg["data"]["ase"]["path"] is None:
        fail("data.ase.path", "source is 'ase' but no path is set")


def _check_ibi(cfg: dict, fail) -> None:
    """IBI models: names no scheme has, targets that are a reference level or a readable g(r)
    table (then with a density), a correction within the network's cutoff."""
    i = cfg["ibi"]
    c = i["correction"]
    if c["cutoff"] > cfg["model"]["cutoff"]:
        fail("ibi.correction.cutoff", f"{c['cutoff']:g} Å exceeds model.cutoff {cfg['model']['cutoff']:g} Å: "
                                      "the model's graphs hold no pairs beyond it")
    if c["r_min"] >= c["cutoff"] or (c["cutoff"] - c["r_min"]) / c["spacing_A"] < 2:
        fail("ibi.correction", f"r_min {c['r_min']:g} Å must lie below the cutoff {c['cutoff']:g} Å by at least "
                               f"two grid spacings ({c['spacing_A']:g} Å)")
    if not i["r_range"][0] < i["r_range"][1]:
        fail("ibi.r_range", f"{i['r_range']}: expected [lower, upper] with lower < upper (Å)")
    for name, m in i["models"].items():
        if name in cfg["schemes"]:
            fail(f"ibi.models.{name}", "a top-down scheme has this name; models need distinct names")
        if m["target"] in cfg["reference"]["levels"]:
            continue
        from .io import InputError
        from .training.ibi import load_rdf_target
        try:
            load_rdf_target(m["target"])
        except InputError as exc:
            fail(f"ibi.models.{name}.target", f"neither a reference level ({sorted(cfg['reference']['levels'])}) "
                                              f"nor a readable r_A, g table: {exc}")
        if m["density_g_cm3"] is None and i["density_g_cm3"] is None:
            fail(f"ibi.models.{name}.density_g_cm3", "a table target needs the state point's density "
                                                     "(here or ibi.density_g_cm3): IBI runs NVT")


def _recorded_frames(ps: float, record_every_fs: float, timestep_fs: float) -> int:
    """Frames an MD run of ``ps`` records: whole recording intervals of whole steps."""
    return max(1, round(ps * 1000 / timestep_fs)) // max(1, round(record_every_fs / timestep_fs))


def _check_difftre_frames(d: dict, fail) -> None:
    """A DiffTRe trajectory must keep frames after its equilibration (as training.top_down counts
    them: whole recording intervals of the trajectory, less the rounded equilibration)."""
    kept = (_recorded_frames(d["trajectory_ps"], d["record_every_fs"], d["timestep_fs"])
            - round(d["equilibration_ps"] * 1000 / d["record_every_fs"]))
    if d["equilibration_ps"] >= d["trajectory_ps"] or kept < 1:
        fail("difftre.equilibration_ps",
             f"{d['equilibration_ps']:g} ps leaves no frame of a {d['trajectory_ps']:g} ps trajectory "
             f"(difftre.trajectory_ps, recorded every {d['record_every_fs']:g} fs): the trajectory "
             "includes the equilibration, so it must be longer by at least one recording interval")
    from .observables.born_directions import born_directions, stiffness_constants  # the state points are hcp
    elastic = stiffness_constants("hexagonal", [t for t in d["targets"] if t.startswith("C")],
                                  any(t.endswith("_slope") for t in d["targets"]))
    if d["born_directions"] and elastic and kept >= 1:
        need = born_directions("hexagonal", elastic).count
        if kept * min(d["born_directions"], need) < need:
            fail("difftre.born_directions",
                 f"{kept} frames per trajectory × {d['born_directions']} strain directions per frame cannot "
                 f"cover the {need} directions the targets {elastic} need: record more frames "
                 "(difftre.record_every_fs, trajectory_ps) or raise born_directions")


def _check_control_variates(e: dict, timestep_fs: float, fail) -> None:
    """hcp control variates fit their coefficients in every block of frames: each block needs
    MIN_FRAMES_PER_VARIATE frames per variate and MIN_BLOCK_PS of production (frames counted as
    the simulator records them: whole recording intervals of whole steps)."""
    from .observables.control_variates import MIN_BLOCK_PS, MIN_FRAMES_PER_VARIATE, variate_count
    if not e["control_variates"]:
        return
    s = e["sampling"]
    per_block = _recorded_frames(s["production_ps"], s["record_every_fs"], timestep_fs) // e["n_blocks"]
    need = MIN_FRAMES_PER_VARIATE * variate_count(2)
    block_ps = s["production_ps"] / e["n_blocks"]
    if per_block < need or block_ps < MIN_BLOCK_PS:
        fail("evaluation.elastic_hcp.control_variates",
             f"blocks of {block_ps:g} ps and {per_block} frames ({s['production_ps']:g} ps every "
             f"{s['record_every_fs']:g} fs in {e['n_blocks']} blocks) are too short for the "
             f"{variate_count(2)} hcp variates: each block needs {MIN_BLOCK_PS:g} ps and {need} frames "
             "(lengthen evaluation.elastic_hcp.sampling.production_ps, or switch them off)")


def _check_experimental_range(cfg: dict, fail) -> None:
    """Temperatures that jobs interpolate in the experimental tables must lie within them: the
    DiffTRe state points (lattice and elastic tables; only if a scheme has an `exp` step) and the
    hcp elastic-constant evaluation (lattice table). The tables are read here, relative to the
    working directory, as the jobs read them."""
    from . import experiment  # pandas: only when a configuration is checked
    from .io import InputError

    tables = {}

    def table(key):
        if key not in tables:
            path = cfg["experiment"][key]
            try:
                tables[key] = (path, getattr(experiment, key)(path))
            except InputError as exc:
                fail(f"experiment.{key}", str(exc))
        return tables[key]

    def within(temps, key, setting):
        path, t = table(key)
        lo, hi = float(t["T_K"].min()), float(t["T_K"].max())
        out = [x for x in temps if not lo <= float(x) <= hi]
        if out:
            fail(setting, f"{', '.join(f'{x:g}' for x in out)} K outside the experimental table {path} "
                          f"(experiment.{key}, {lo:g}-{hi:g} K), which the job interpolates in")

    d = cfg["difftre"]
    if any("exp" in s["steps"] for s in cfg["schemes"].values()):
        within(d["temperatures"], "lattice_constants", "difftre.temperatures")
        if any(t.startswith("C") for t in d["targets"]):
            within(d["temperatures"], "elastic_constants", "difftre.temperatures")
    temps = cfg["evaluation"]["elastic_hcp"]["temperatures"]
    if temps == "all":  # the elastic table's temperatures, at the lattice table's constants
        temps = table("elastic_constants")[1]["T_K"].tolist()
    within(temps, "lattice_constants", "evaluation.elastic_hcp.temperatures")


def subset(cfg: dict, *keys: str) -> dict:
    """The configuration keys a job uses (dotted paths such as ``evaluation.md``), nested as in
    ``cfg`` and in its order. Rules pass this as their ``params``, so Snakemake reruns a job when,
    and only when, a setting it uses changes (it compares the params' repr); jobs read nothing
    else, so a key missing here fails loudly. The order is kept, not sorted: some mappings are
    ordered settings (``reference.sampling.phases`` are sampled in turn from one random stream),
    so reordering keys in a file may rerun a job, and rightly."""
    out: dict = {}
    for key in keys:
        *parents, leaf = key.split(".")
        src, dst = cfg, out
        for part in parents:
            src, dst = src[part], dst.setdefault(part, {})
        if leaf not in src:
            raise KeyError(f"configuration has no key {key!r}")
        dst[leaf] = copy.deepcopy(src[leaf])
    return out


def load_config(path) -> dict:
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read configuration ({exc})") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of keys at the top level")
    return validate_config(raw, source=str(path))
