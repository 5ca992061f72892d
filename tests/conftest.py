"""Shared fixtures: the reference metadata and generated Cellmap datasets."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

# Shared, noisy machines: no per-example deadlines, no "too slow" health check.
settings.register_profile(
    "cellmap", deadline=None, suppress_health_check=[HealthCheck.too_slow], max_examples=50
)
settings.load_profile("cellmap")


DATA = Path(__file__).resolve().parent / "data"
"""Real Cellmap metadata carried by the repository (``tests/data/README.md`` says where each
file came from); the tests read nothing outside the repository."""

REFERENCE = DATA / "reference"
REGISTRY = DATA / "registry"


def load_reference(name: str) -> dict[str, Any]:
    value: dict[str, Any] = json.loads((REFERENCE / name).read_text())
    return value


HELA_GROUP = "cosem-group-jrc_hela-2-em-fibsem-uint16.attributes.json"
HELA_S0 = "cosem-array-jrc_hela-2-em-fibsem-uint16-s0.attributes.json"
NGFF_PUBLISHED = "ngff-v04-cellmap-published.zattrs.json"


@pytest.fixture
def hela_group() -> dict[str, Any]:
    return load_reference(HELA_GROUP)


@pytest.fixture
def hela_s0() -> dict[str, Any]:
    return load_reference(HELA_S0)


# --------------------------------------------------------------------------------------
# S3: moto's standalone server on 127.0.0.1, one per test module
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def moto() -> Iterator[Any]:
    """A real S3 server (``python -m moto.server``) on 127.0.0.1, stopped after the module."""
    from tests.s3server import MotoServer

    server = MotoServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def aws(moto: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """Fake credentials and the test server in the environment (inherited by subprocesses);
    no other AWS setting of the machine leaks in, and no client looks for an instance role."""
    from tests.s3server import CLEARED_AWS_VARIABLES, fake_aws_environment

    home = tmp_path / "home"
    home.mkdir()
    for name in CLEARED_AWS_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    for name, value in fake_aws_environment(moto.url, home).items():
        monkeypatch.setenv(name, value)
    return moto
