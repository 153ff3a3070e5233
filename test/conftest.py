"""Shared test set-up: torch on one thread for the whole session.

Tiny test networks run as fast on one thread, and on a busy two-core machine a torch (OpenMP)
thread pool stalls at every barrier, many times slower. Tests that need another count set it
themselves and put it back.
"""

import pytest
import torch


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
