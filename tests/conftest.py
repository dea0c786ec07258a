"""Test-session settings."""

import torch

# The test networks are tiny: extra threads only add synchronisation (and stall on a busy machine).
torch.set_num_threads(1)
