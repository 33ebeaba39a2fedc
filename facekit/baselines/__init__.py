"""Baselines to compare facekit's learned normalization against (e.g. 3-D frontalization, Hassner et al. 2015).

Each baseline duck-types :class:`facekit.normalize.Normalizer` (``normalize_many``, ``detector`` and ``face``), so
:func:`facekit.evaluate.evaluate_normalizer` measures it unchanged. Import the submodules directly
(``from facekit.baselines.frontalize import Frontalizer``); nothing heavy is imported here.
"""
