"""Fixtures of the unit tier: a driver on fakes (``world``), its Flask ``app`` and ``client``."""

from __future__ import annotations

from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from tests.world import World


@pytest.fixture
def world(tmp_path: Path) -> World:
    return World(tmp_path)


@pytest.fixture
def app(world: World) -> Flask:
    return world.app()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()
