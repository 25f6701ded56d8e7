"""Hand-object detections: official EPIC-100 files, the detection table, detectron2 backend,
crops around the detected boxes and per-class object features (model B).

Submodules import their heavy dependencies themselves; importing this package is cheap.
"""
