"""extractors: video/audio decoding, TV-L1 flow, hand-object detection and crops, TBN/I3D backbones,
source fine-tuning and feature extraction. Writes the feature contract of ``m3em.epic.features``."""
