"""Fixtures shared by the test modules (plain helper functions live in helpers.py)."""
import pytest
import torch


@pytest.fixture
def one_thread():
    """One intra-op thread: the tiny models run fastest so, above all on a busy machine (10x slower otherwise)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
