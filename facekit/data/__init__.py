"""Training data for the decoder: augmentation by random morphs (Cole et al. CVPR 2017, Sec. 5) and its compositing.

Modules are imported explicitly (``facekit.data.poisson``, ``facekit.data.augment``); this package imports nothing
heavy so that ``import facekit`` stays light.
"""
