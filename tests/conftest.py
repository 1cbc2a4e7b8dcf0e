import os
import sys
import tempfile

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
# Trained sentencepiece models are cached per user; keep the tests' cache private.
os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="ofasys-test-cache-")


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


@pytest.fixture(scope="session")
def repo_root() -> str:
    return ROOT
