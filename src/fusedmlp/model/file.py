"""Model files: one self-contained ``.npz`` with the settings (JSON), the parameters and the
provenance, written atomically.

Layout (format version 2): ``header`` holds ``{"format_version", "settings", "metadata",
"parameters"}`` as JSON, ``parameters`` mapping each array name ``param:<k>`` to the key path of
its leaf in the nested parameter dict (``["net", "dimenet_pp/~/output_0", "w"]``). Any nested dict
of arrays round-trips, so a model with another energy term or more heads needs no new format;
the loader checks the leaves against the shapes the settings create. Version 1 files (the
fixed layout ``param:scale``, ``param:shift``, ``param:net/<module>/<name>``) still load.
"""

from __future__ import annotations

import json
import platform
from pathlib import Path

import numpy as np

from .. import io as fio
from .params import flatten, parameter_shapes, unflatten
from .settings import ModelSettings, UnknownHead

FORMAT_VERSION = 2


PROVENANCE_PACKAGES = ("fusedmlp", "jax", "jaxlib", "jax-md", "dm-haiku", "optax", "numpy")


def package_versions() -> dict:
    """Versions of the packages that compute a model, for its provenance record."""
    from importlib import metadata

    out = {"python": platform.python_version()}
    for name in PROVENANCE_PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def save_model(path, settings: ModelSettings, params, metadata: dict | None = None) -> None:
    """One self-contained file: settings (JSON), parameters and provenance, written atomically."""
    flat = flatten(params)
    names = {f"param:{k}": list(path) for k, path in enumerate(flat)}
    header = {"format_version": FORMAT_VERSION, "settings": settings.to_dict(),
              "metadata": {**(metadata or {}), "versions": package_versions()}, "parameters": names}
    arrays = dict(zip(names, flat.values()))
    fio.save_npz(path, header=np.array(json.dumps(header)), **arrays)


def _v1_path(name: str) -> tuple:
    """Key path of a version-1 array name: ``scale``, ``shift`` or ``net/<module>/<name>``."""
    if name.startswith("net/"):
        module, leaf = name[4:].rsplit("/", 1)
        return ("net", module, leaf)
    return (name,)


def load_model(path, expected: ModelSettings | None = None):
    """(settings, params, metadata) from a model file, checked against ``expected`` settings
    (the architecture and species; the heads are the file's own, chosen by ``model_head``)."""
    path = Path(path)
    if not path.is_file():
        raise fio.InputError(path, None, "model file does not exist")
    try:
        with np.load(path, allow_pickle=False) as z:
            header = json.loads(str(z["header"]))
            arrays = {k: z[k] for k in z.files if k.startswith("param:")}
    except Exception as exc:
        raise fio.InputError(path, None, "not a model file: expected an .npz archive with a JSON header, as "
                                         f"fusedmlp.model.file.save_model writes ({type(exc).__name__})") from exc
    version = header.get("format_version")
    if version not in (1, FORMAT_VERSION):
        raise fio.InputError(path, "format_version", f"got {version!r}, expected 1 or {FORMAT_VERSION}")
    if version == 1:
        flat = {_v1_path(k[len("param:"):]): v for k, v in arrays.items()}
    else:
        flat = {tuple(header["parameters"][k]): v for k, v in arrays.items()}
    settings = ModelSettings.from_dict(header["settings"])
    if expected is not None:
        a, b = settings.hyperparameters(), expected.hyperparameters()
        diff = {k: (a[k], b[k]) for k in b if k not in ("heads", "n_heads", "head_form") and a.get(k) != b[k]}
        if diff:
            raise fio.InputError(path, "settings", "the model file was made with a different model "
                                                   f"configuration (file, expected): {diff}")
    params = unflatten(flat)
    want = parameter_shapes(settings)
    got = {k: tuple(v.shape) for k, v in flatten(params).items()}
    if want != got:
        missing = sorted(set(want) - set(got))
        wrong = sorted("/".join(k) for k in set(want) & set(got) if want[k] != got[k])
        missing = ["/".join(k) for k in missing]
        raise fio.InputError(path, "params", f"parameters do not fit the settings (missing "
                                             f"{missing[:5]}, wrong shape {wrong[:5]})")
    return settings, params, header.get("metadata", {})


def model_head(path, settings: ModelSettings, head: int | str | None = None) -> int:
    """Index of ``head`` among the heads of the model file at ``path`` (``None``: the only head
    of a single-head file). An unknown head, or none named for a file with several, is an error
    naming the file and its heads, never a silent choice."""
    try:
        return settings.head_index(head)
    except UnknownHead as exc:
        raise fio.InputError(path, "heads", str(exc)) from None


def load_head(path, head: int | str | None = None, expected: ModelSettings | None = None):
    """(settings, params, metadata, head index) of a model file at one of its heads."""
    settings, params, metadata = load_model(path, expected)
    return settings, params, metadata, model_head(path, settings, head)
