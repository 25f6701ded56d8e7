"""The bundled demo dataset: a small, deterministic, generated stand-in for EPIC-KITCHENS-100 UDA.

It looks like EPIC from the outside (MP4 videos with audio, the official annotation CSVs, class
files, video table and hand-object pickles) and carries a real, learnable task with a real domain
gap; see ``docs/demo_dataset.md``. Entry point: ``python -m epic_demo --config config.yaml``.
"""

from epic_demo.generate import DemoConfig, expected_outputs, generate_dataset

__all__ = ["DemoConfig", "expected_outputs", "generate_dataset"]
