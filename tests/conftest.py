import sys
from pathlib import Path

import pytest
import torch

# tests/ on the path so helper modules (e.g. _sweep_toy) import in spawned worker processes too
sys.path.insert(0, str(Path(__file__).resolve().parent))

# The tests use tiny models: one intra-op thread avoids thread-pool overhead and oversubscription
# (pytest-xdist workers, spawned ranks).
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def mnist():
    """The bundled 5,000-image MNIST subset (4,000 train / 1,000 test), loaded once."""
    from varsmooth.data import load_dataset

    return load_dataset("mnist-subset")
