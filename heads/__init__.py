"""Valence/arousal heads trained from cached features, in rooms by role (bottom to top): ``training`` (fold
tensors, head models, the loop, run folders), ``evaluation`` (metrics, intervals, their calibration),
``deployment`` (model folders, export, predict), ``reporting`` (figures, tables, HTML), ``studies`` (ablations,
cross-corpus). A room imports only the rooms below it (``tests/test_layering.py``)."""
