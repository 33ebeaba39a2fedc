"""Applications of normalized faces, one module each: ``adjust`` (white balance and exposure from the face) with its
baselines (``baselines``: general white balancing)."""
