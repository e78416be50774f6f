"""Shared test setup: small thread counts so the suite fits two CPU cores."""

import torch

torch.set_num_threads(2)
