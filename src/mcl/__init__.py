"""mcl: Multistage Contrastive Learning (ECCV 2024) for PyTorch.

Train in stages; after each stage cluster the training set's embeddings; in the next stage draw
each anchor's negatives only from its own pseudo-label group (the combination of its clusters in
all earlier stages); finally concatenate the features of all stages.

>>> import mcl
>>> run = mcl.train("configs/demo.yaml", out="runs/demo")
>>> encoder = mcl.load("runs/demo")
>>> features = encoder.embed(images)  # uint8 (N, H, W, 3) -> (N, D)
"""

from mcl.api import Run, load, train
from mcl.config import Config, load_config
from mcl.errors import MCLError
from mcl.integration import MultistageEncoder
from mcl.multimodal import MultistageTwoTower
from mcl.sampling import ClusterBatchSampler, combine_cluster_labels

__version__ = "0.1.0"

__all__ = ["ClusterBatchSampler", "Config", "MCLError", "MultistageEncoder", "MultistageTwoTower", "Run",
           "combine_cluster_labels", "load", "load_config", "train"]
