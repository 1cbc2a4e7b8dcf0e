import os
import sys
import tempfile

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
# Trained sentencepiece models are cached per user; keep the tests' cache private.
os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="ofasys-test-cache-")
# The fairseq runs the tests start use one thread too: `make test` runs two test processes
# on two cores, and tiny models' intra-op threads then only contend (measured: 10.8 minutes
# instead of 18 with torch's default threads).
os.environ["OMP_NUM_THREADS"] = "1"


@pytest.fixture(scope="session", autouse=True)
def one_thread():
    """Tiny models gain nothing from intra-op threads, and on a busy 2-core machine the
    thread hand-offs cost more than the arithmetic. (Subprocesses keep torch's default.)"""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: end-to-end runs of the fairseq tools (minutes)")


def pytest_collection_modifyitems(session, config, items):
    """Files with slow tests first: `make test`'s two processes take whole files in this
    order, so the long runs start early and the short files fill in around them."""
    slow_files = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in slow_files)  # stable: order kept within


@pytest.fixture(scope="session")
def repo_root() -> str:
    return ROOT
