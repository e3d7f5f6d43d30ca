"""Shared by every suite: the project on sys.path, and the topology the real-namespace tests need."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


@pytest.fixture(scope="module")
def topology() -> None:
    """sk-server/sk-client joined by swissknife0/1, built (or repaired) by the real CLI."""
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root")
    up = subprocess.run([sys.executable, str(ROOT / "netns" / "setup.py"), "up"], capture_output=True, text=True,
                        timeout=60)
    assert up.returncode == 0, up.stderr
