import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


def find_data_root() -> Path | None:
    """$FEDTICKET_DATA, else ../shared/data beside the repo (the offline copy CI provides)."""
    env = os.environ.get("FEDTICKET_DATA")
    for cand in (env, REPO.parent / "shared" / "data"):
        if cand and Path(cand).is_dir():
            return Path(cand)
    return None


@pytest.fixture
def data_root() -> Path:
    root = find_data_root()
    if root is None:
        pytest.skip("no data root: set FEDTICKET_DATA or provide ../shared/data")
    return root


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def one_torch_thread():
    """One torch thread: tiny tensors on small shared machines, where more threads only add
    contention; results do not depend on it."""
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(prev)
