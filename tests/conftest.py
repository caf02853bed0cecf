"""Suite-wide settings.

Under pytest-xdist (``make test`` runs two workers, one per core) each worker
process keeps torch to one intra-op thread, so the two workers do not fight
over the cores; tests that need more threads set them themselves.
"""

import os

import torch

if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)
