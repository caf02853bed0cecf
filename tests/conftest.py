"""Suite-wide settings and shared fixtures.

Under pytest-xdist (``make test`` runs two workers, one per core) each worker
process keeps torch to one intra-op thread, so the two workers do not fight
over the cores; tests that need more threads set them themselves.
"""

import os

import pytest
import torch

if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)


@pytest.fixture
def float64_one_thread():
    """float64 by default (the tolerances are tight) and one torch thread (the tensors are
    tiny: a second thread on a busy machine makes each op many times slower); restored after.
    Modules take it with ``pytestmark = pytest.mark.usefixtures("float64_one_thread")``."""
    old_dtype, old_threads = torch.get_default_dtype(), torch.get_num_threads()
    torch.set_default_dtype(torch.float64)
    torch.set_num_threads(1)
    yield
    torch.set_default_dtype(old_dtype)
    torch.set_num_threads(old_threads)
