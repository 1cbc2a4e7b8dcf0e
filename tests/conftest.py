import os
import sys
import tempfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
# Trained sentencepiece models are cached per user; keep the tests' cache private.
os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="ofasys-test-cache-")


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: end-to-end runs of the fairseq tools (minutes)")


@pytest.fixture(scope="session")
def repo_root() -> str:
    return ROOT
