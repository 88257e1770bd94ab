"""Data-processing aspect, representation generation: generate the missing modality's
*representation* rather than its input.

- ``masked-modality-ae`` (indirect, ActionMAE-style masked-token autoencoding);
- ``mmin`` (direct, MMIN imagination of the full joint embedding; needs complete training data);
- ``cpm-nets`` (encoder-free per-sample latents fitted by masked reconstruction; transductive at test).
"""
