"""m3em: the EPIC data layer (annotations, class files, feature contract), TA3N + M3EM models,
training, evaluation, ensembling and the challenge submission file.

Dependencies point one way: ``extractors`` imports ``m3em``'s data layer, ``m3em`` never imports
``extractors``.
"""

__version__ = "0.1.0"
