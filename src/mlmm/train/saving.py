"""Save a FittedModel to a directory and load it back: weights + a JSON manifest, no pickle.

A model directory holds two files:

- ``weights.safetensors``: the tensors of the model's ``state_dict`` (method parameters and
  buffers, the ``calibrated`` and ``seen_modalities`` flags), in the safetensors format, which holds raw tensors
  only — loading it executes nothing;
- ``manifest.json``: ``format`` / ``format_version``, the mlmm and torch versions, the method
  (registry name and class path) and its constructor parameters (``get_params``), the
  dataset spec (``DatasetSpec.to_dict``), the standardiser's statistics, the class names,
  the module state that is not a tensor (e.g. the pattern router's calibration log, from
  ``get_extra_state``), which training-data state was left out or kept and why, free
  ``metadata`` (e.g. the data-file column mapping of ``mlmm run --save-model``) and the
  SHA-256 of the weights file.

State that holds training data (``MissingModalityModel.training_state``) is not saved unless
prediction needs it; the manifest lists both cases (``training_state``).

Parameters that are modules (user encoders passed by instance) are recorded as their class
path (``module:QualName``) and constructor parameters where these are known (the object has
``get_params()``, or stores every ``__init__`` argument under its own name). **Loading never
imports a module a manifest names**: the class is looked up among modules already imported
(so ``import my_encoders`` before ``mlmm.load``) and must be an ``nn.Module`` subclass;
where the class or its parameters cannot be found, pass the instances yourself —
``mlmm.load(path, encoders={"image": MyCNN()})`` — and the saved weights are loaded into them.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import json
import math
import sys
from collections.abc import Mapping
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..data.preprocess import Standardizer
from ..data.spec import DatasetSpec
from ..methods.base import MissingModalityModel
from .fitted import FittedModel

FORMAT = "mlmm-model"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
WEIGHTS = "weights.safetensors"
_REQUIRED = {"format": str, "format_version": int, "method": (str, type(None)), "method_class": str, "params": dict,
             "spec": dict, "standardizer": dict, "class_names": (list, type(None)), "weights_sha256": str,
             "extra_state": dict, "training_state": dict, "metadata": dict}


class ModelFileError(ValueError):
    """A model directory that cannot be loaded; the message names the file and the problem."""


# ------------------------------------------------------------------ JSON values


def class_path(obj: type) -> str:
    return f"{obj.__module__}:{obj.__qualname__}"


def encode(value: Any, where: str) -> Any:
    """A constructor parameter as JSON: tuples tagged ``{"$tuple": [...]}``, module classes
    ``{"$class": path}``, module instances ``{"$module": path, "params": {...} | null}``."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else {"$float": repr(value)}  # JSON has no nan / inf
    if isinstance(value, tuple):
        return {"$tuple": [encode(v, f"{where}[{i}]") for i, v in enumerate(value)]}
    if isinstance(value, list):
        return [encode(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, Mapping):
        if not all(isinstance(k, str) for k in value):
            raise ValueError(f"{where}: a mapping with non-string keys cannot be written to a JSON manifest")
        return {k: encode(v, f"{where}[{k!r}]") for k, v in value.items()}
    if isinstance(value, type) and issubclass(value, nn.Module):
        return {"$class": class_path(value)}
    if isinstance(value, nn.Module):
        return {"$module": class_path(type(value)), "params": module_params(value, where)}
    raise ValueError(f"{where}: a {type(value).__name__} cannot be written to a JSON manifest "
                     "(parameters must be JSON values, tuples, module classes or module instances)")


def module_params(module: nn.Module, where: str) -> dict | None:
    """Constructor parameters of a module instance where they are known: its ``get_params()``,
    or every ``__init__`` argument stored under its own name (a required one missing, or one
    whose stored value is a module or tensor, makes them unknown: ``None``)."""
    getter = getattr(module, "get_params", None)
    if callable(getter):
        params = getter()
    else:
        params = {}
        try:
            signature = inspect.signature(type(module).__init__)
        except (TypeError, ValueError):
            return None
        for name, p in list(signature.parameters.items())[1:]:
            if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                continue
            if name in module.__dict__ and not isinstance(module.__dict__[name], (nn.Module, Tensor)):
                params[name] = module.__dict__[name]
            elif p.default is p.empty:
                return None
    try:
        return encode(dict(params), f"{where} parameters")
    except ValueError:
        return None


def resolve_class(path: str, base: type, what: str) -> type:
    """The class at ``module:QualName`` among modules already imported (mlmm's own may be
    imported); it must subclass ``base``. Never imports a module a manifest names."""
    module_name, _, qualname = str(path).partition(":")
    if module_name.split(".")[0] == "mlmm" and module_name not in sys.modules:
        try:
            importlib.import_module(module_name)
        except ImportError:
            pass
    module = sys.modules.get(module_name)
    if module is None:
        raise ModelFileError(f"{what}: class {path!r} is in module {module_name!r}, which is not imported; "
                             "import it before loading (mlmm.load never imports what a manifest names)")
    obj: Any = module
    for part in qualname.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            raise ModelFileError(f"{what}: module {module_name!r} has no {qualname!r}")
    if not (isinstance(obj, type) and issubclass(obj, base)):
        raise ModelFileError(f"{what}: {path!r} is not a subclass of {base.__name__}")
    return obj


def decode(value: Any, where: str, overrides: Mapping[str, nn.Module] | None = None) -> Any:
    """Inverse of ``encode``; module instances are rebuilt (or taken from ``overrides``)."""
    if isinstance(value, list):
        return [decode(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if not isinstance(value, dict):
        return value
    if "$float" in value:
        if value["$float"] not in ("nan", "inf", "-inf"):
            raise ModelFileError(f"{where}: {value['$float']!r} is not a float")
        return float(value["$float"])
    if "$tuple" in value:
        return tuple(decode(v, f"{where}[{i}]") for i, v in enumerate(value["$tuple"]))
    if "$class" in value:
        return resolve_class(value["$class"], nn.Module, where)
    if "$module" in value:
        if value.get("params") is None:
            raise ModelFileError(f"{where} is a {value['$module']} whose constructor parameters are unknown: "
                                 "pass the instance to load (e.g. mlmm.load(path, encoders={...}))")
        cls = resolve_class(value["$module"], nn.Module, where)
        with torch.random.fork_rng(devices=[]):  # its random init is overwritten; leave the caller's RNG alone
            return cls(**decode(value["params"], f"{where} parameters"))
    return {k: decode(v, f"{where}[{k!r}]") for k, v in value.items()}


# ------------------------------------------------------------------ training-data state


def training_state(method: MissingModalityModel, keys: list[str]) -> tuple[list[str], dict[str, str]]:
    """(keys of ``method.state_dict()`` left out, {kept key: why prediction needs it}) from the
    ``training_state`` declarations of ``method`` and of every method inside it."""
    dropped, kept = [], {}
    for prefix, module in method.named_modules():
        if not isinstance(module, MissingModalityModel):
            continue
        prefix = f"{prefix}." if prefix else ""
        for pattern, reason in module.training_state.items():
            for key in keys:
                rel = key[len(prefix):] if key.startswith(prefix) else None
                if rel is None or not (fnmatch(rel, pattern) or rel.startswith(pattern + ".")):
                    continue
                if reason is None:
                    dropped.append(key)
                else:
                    kept[key] = reason
    return sorted(set(dropped)), kept


# ------------------------------------------------------------------ save


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _standardizer_stats(standardizer: Standardizer) -> dict[str, list]:
    return {name: buf.detach().cpu().tolist() for name, buf in standardizer.state_dict().items()}


def save_model(model: FittedModel, path: str | Path) -> Path:
    """Write ``model`` to directory ``path`` (created; an existing directory must be empty or a
    model directory, whose files are replaced). Returns the path."""
    from safetensors.torch import save_file

    from .. import __version__

    out = Path(path).expanduser()
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not (out / MANIFEST).is_file():
        raise ValueError(f"{out} is a non-empty directory without {MANIFEST}; save a model into a new directory")
    method = model.method
    params = encode(method.get_params(), f"parameter of {type(method).__name__}")
    state = model.method.state_dict()
    dropped, kept = training_state(method, list(state))
    tensors, extra = {}, {}
    for key, value in state.items():
        if key in dropped:
            continue
        if isinstance(value, Tensor):
            tensors[f"method.{key}"] = value.detach().cpu().contiguous().clone()
        else:  # get_extra_state of a module (e.g. the router's calibration log)
            extra[f"method.{key}"] = encode(value, f"state {key!r}")
    for key, value in model.state_dict().items():  # the model's own flags: calibrated, seen_modalities
        if not key.startswith(("method.", "standardizer.")):
            tensors[key] = value.detach().cpu().contiguous().clone()
    out.mkdir(parents=True, exist_ok=True)
    (out / MANIFEST).unlink(missing_ok=True)  # written last: a directory without it is incomplete
    save_file(tensors, str(out / WEIGHTS), metadata={"format": FORMAT})
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "mlmm_version": __version__,
        "torch_version": torch.__version__,
        "method": getattr(type(method), "method_name", None),
        "method_class": class_path(type(method)),
        "params": params,
        "spec": method.spec.to_dict(),
        "standardizer": _standardizer_stats(model.standardizer),
        "class_names": None if model.class_names is None else list(model.class_names),
        "use_unseen_modalities": bool(model.use_unseen_modalities),
        "extra_state": extra,
        "training_state": {"dropped": [f"method.{k}" for k in dropped],
                           "kept": {f"method.{k}": why for k, why in kept.items()}},
        "metadata": encode(model.metadata, "metadata"),
        "weights_sha256": _sha256(out / WEIGHTS),
    }
    text = json.dumps(manifest, indent=1, allow_nan=False)
    (out / MANIFEST).write_text(text + "\n", encoding="utf-8")
    return out


# ------------------------------------------------------------------ load


def read_manifest(path: str | Path) -> dict:
    """The checked manifest of model directory ``path`` (ModelFileError naming the file)."""
    root = Path(path).expanduser()
    file = root / MANIFEST
    if not root.is_dir():
        raise ModelFileError(f"{root}: no such model directory")
    if not file.is_file():
        raise ModelFileError(f"{file}: missing (not a model directory written by FittedModel.save)")
    try:
        manifest = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ModelFileError(f"{file}: not valid JSON ({err})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ModelFileError(f"{file}: not an mlmm model manifest (format is not {FORMAT!r})")
    version = manifest.get("format_version")
    if not isinstance(version, int) or version != FORMAT_VERSION:
        newer = "; it was written by a newer mlmm" if isinstance(version, int) and version > FORMAT_VERSION else ""
        raise ModelFileError(f"{file}: format_version {version!r} is not supported (this mlmm reads version "
                             f"{FORMAT_VERSION}{newer})")
    for key, kind in _REQUIRED.items():
        if key not in manifest:
            raise ModelFileError(f"{file}: field {key!r} is missing")
        if not isinstance(manifest[key], kind):
            raise ModelFileError(f"{file}: field {key!r} has the wrong type ({type(manifest[key]).__name__})")
    return manifest


def _build(manifest: dict, file: Path, encoders: Mapping[str, nn.Module] | None,
           overrides: Mapping[str, Any]) -> MissingModalityModel:
    from ..methods.registry import METHODS
    from ..registry import UnknownNameError

    try:
        spec = DatasetSpec.from_dict(manifest["spec"])
    except (TypeError, ValueError) as err:
        raise ModelFileError(f"{file}: field 'spec' is not a valid dataset spec: {err}") from None
    if manifest["method"] is not None:
        try:
            cls = METHODS.get(manifest["method"])
        except UnknownNameError as err:  # it lists the known ones
            raise ModelFileError(f"{file}: method {manifest['method']!r} is not registered ({err})") from None
    else:
        cls = resolve_class(manifest["method_class"], MissingModalityModel, f"{file}: method_class")
    raw = {k: v for k, v in manifest["params"].items() if k not in overrides}
    if encoders:
        accepted = inspect.signature(cls.__init__).parameters
        if "encoders" not in accepted and not any(p.kind is p.VAR_KEYWORD for p in accepted.values()):
            raise ModelFileError(f"{file}: method {manifest['method'] or cls.__name__!r} takes no encoders parameter")
        saved = raw.get("encoders")
        # Encoders the caller passes are never rebuilt from the manifest (their class may not be importable).
        raw["encoders"] = {k: v for k, v in saved.items() if k not in encoders} if isinstance(saved, dict) else None
    params = decode(raw, f"{file}: parameter")
    params.update(overrides)
    if encoders:
        params["encoders"] = {**(params.get("encoders") or {}), **encoders}
    try:
        with torch.random.fork_rng(devices=[]):  # weights come from the file; leave the caller's RNG alone
            return cls(spec, **params)
    except ModelFileError:
        raise
    except (TypeError, ValueError) as err:
        raise ModelFileError(f"{file}: cannot rebuild method {manifest['method'] or cls.__name__!r} from its "
                             f"parameters: {err}") from None


def load(path: str | Path, encoders: Mapping[str, nn.Module] | None = None, device: str | torch.device = "cpu",
         **params: Any) -> FittedModel:
    """The ``FittedModel`` saved in directory ``path`` by ``FittedModel.save``, in eval mode on
    ``device``. ``encoders``: modality -> encoder instance, for encoders passed by instance
    at training whose class or parameters the manifest cannot rebuild (their weights are
    loaded from the file); ``params``: any other constructor parameter to override (e.g. a
    ``head=`` instance). Every problem is a ``ModelFileError`` naming the file."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    root = Path(path).expanduser()
    manifest = read_manifest(root)
    file, weights_file = root / MANIFEST, root / WEIGHTS
    if not weights_file.is_file():
        raise ModelFileError(f"{weights_file}: missing")
    if _sha256(weights_file) != manifest["weights_sha256"]:
        raise ModelFileError(f"{weights_file}: its SHA-256 differs from the one in {MANIFEST} (the file changed "
                             "after saving, or belongs to another model)")
    try:
        tensors = load_file(str(weights_file), device="cpu")
    except (SafetensorError, OSError, ValueError) as err:
        raise ModelFileError(f"{weights_file}: cannot read as safetensors: {err}") from None
    method = _build(manifest, file, encoders, params)
    standardizer = Standardizer(method.spec, method.preprocessing)
    try:
        stats = {k: torch.tensor(v, dtype=torch.float32) for k, v in manifest["standardizer"].items()}
        standardizer.load_state_dict(stats)
    except (TypeError, ValueError, RuntimeError) as err:
        reason = str(err).splitlines()[0]
        raise ModelFileError(f"{file}: field 'standardizer' does not fit the spec: {reason}") from None
    model = FittedModel(standardizer, method, use_unseen_modalities=bool(manifest.get("use_unseen_modalities")),
                        class_names=manifest["class_names"],
                        metadata=decode(manifest["metadata"], f"{file}: metadata"))
    state: dict[str, Any] = {k[len("method."):]: v for k, v in tensors.items() if k.startswith("method.")}
    for key, value in manifest["extra_state"].items():
        state[key[len("method."):]] = decode(value, f"{file}: extra_state {key!r}")
    dropped = {k[len("method."):] for k in manifest["training_state"].get("dropped", [])}
    expected = set(method.state_dict())
    missing = sorted(expected - set(state) - dropped)
    unexpected = sorted(set(state) - expected)
    if missing or unexpected:
        what = f"lacks {missing[0]!r}" if missing else f"has {unexpected[0]!r}, which the method does not"
        raise ModelFileError(f"{weights_file}: the weights do not match the method in {MANIFEST}: it {what}")
    try:
        method.load_state_dict(state, strict=False)
    except RuntimeError as err:
        detail = " ".join(line.strip() for line in str(err).splitlines()[1:3])
        raise ModelFileError(f"{weights_file}: the weights do not match the method in {MANIFEST}: {detail}") from None
    for key, buf in model.named_buffers(recurse=False):
        if key in tensors:
            if tensors[key].shape != buf.shape:
                raise ModelFileError(f"{weights_file}: {key!r} has shape {tuple(tensors[key].shape)}, the model "
                                     f"{tuple(buf.shape)}")
            buf.copy_(tensors[key])
    return model.to(device).eval()

