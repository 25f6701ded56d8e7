"""Backbones for feature extraction: TBN (BN-Inception RGB / Flow / Audio + mid-fusion) and I3D.

Modules: :mod:`.bninception` (the Caffe BN-Inception trunk), :mod:`.tbn`, :mod:`.i3d`,
:mod:`.weights` (checkpoint reading, strict loading), :mod:`.inputs` (sampling and geometry of
model inputs), :mod:`.config` (the ``backbones`` / ``finetune`` / ``features`` config sections).
Entry points: ``python -m extractors.finetune`` and ``python -m extractors.extract``.
"""
