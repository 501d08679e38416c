"""``shim.revive``: Docker's start-up decision mirrored, and the reviver on a fake Docker."""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import pytest

from shim.dockerstart import Stopped
from shim.errors import PycniError
from shim.revive import DockerSide, Reviver, should_start, stranded

pytestmark = pytest.mark.unit

NOT_FOUND = 'failed to create endpoint web on network net: plugin "pycni" not found'


def stopped(name: str = "web", **changes: Any) -> Stopped:
    """A container Docker tried to start as it started, and could not: pycni wasn't there."""
    base = Stopped(
        id=name * 4,
        name=name,
        status="exited",
        error=NOT_FOUND,
        exit_code=128,
        started_before=True,
        policy="always",
        max_retries=0,
        restart_count=0,
        networks=("net",),
    )
    return dataclasses.replace(base, **changes)


# --- Docker's decision ---------------------------------------------------------------------------


@pytest.mark.parametrize(("changes", "why"), [
    ({}, "restart policy always"),
    ({"policy": "unless-stopped"}, "restart policy unless-stopped"),
    ({"policy": "on-failure"}, "restart policy on-failure, exit code 128"),
    ({"policy": "on-failure", "max_retries": 3, "restart_count": 2},
     "restart policy on-failure, exit code 128"),
])
def test_what_docker_would_have_started(changes: dict[str, Any], why: str) -> None:
    assert should_start(stopped(**changes)) == why


@pytest.mark.parametrize("changes", [
    {"policy": "no"},
    {"policy": ""},
    {"policy": "on-failure", "exit_code": 0},  # it succeeded: on-failure leaves it
    {"policy": "on-failure", "max_retries": 3, "restart_count": 3},  # no retries left
    {"error": ""},  # no failed start on record: its user stopped it (or it just exited)
    {"policy": "unless-stopped", "error": ""},
    {"started_before": False},  # Docker restores only containers started before
    {"status": "running"},
    {"status": "restarting"},  # Docker's restart manager has it
    {"status": "created"},
    {"status": "dead"},
])
def test_what_docker_would_have_left_alone(changes: dict[str, Any]) -> None:
    assert should_start(stopped(**changes)) == ""


def test_stranded_keeps_the_order_and_says_why() -> None:
    found = stranded([stopped("a"), stopped("b", error=""), stopped("c", policy="unless-stopped")])
    assert [(c.name, why) for c, why in found] == [
        ("a", "restart policy always"), ("c", "restart policy unless-stopped")]


# --- the reviver ---------------------------------------------------------------------------------


class FakeDocker:
    """Docker's containers as :class:`Stopped` values; ``start`` runs them (or fails)."""

    def __init__(self, *containers: Stopped, down_for: int = 0) -> None:
        self.containers = {c.id: c for c in containers}
        self.down_for = down_for
        self.asked: list[str] = []
        self.started: list[str] = []
        #: name → how many starts fail before one succeeds
        self.failing: dict[str, int] = {}

    def side(self) -> DockerSide:
        return DockerSide(stopped=self.stopped, start=self.start)

    def stopped(self, driver_name: str) -> list[Stopped]:
        self.asked.append(driver_name)
        if self.down_for:
            self.down_for -= 1
            raise PycniError("Error while fetching server API version: connection refused")
        return [c for c in self.containers.values() if c.status == "exited"]

    def start(self, container_id: str) -> None:
        c = self.containers[container_id]
        if self.failing.get(c.name, 0):
            self.failing[c.name] -= 1
            self.containers[container_id] = dataclasses.replace(c, error="CNI plugin failed")
            raise PycniError("CNI plugin failed")
        self.started.append(c.name)
        self.containers[container_id] = dataclasses.replace(c, status="running", error="")


def reviver(docker: FakeDocker, rounds: int = 5) -> Reviver:
    return Reviver("pycni:latest", docker.side(), rounds=rounds, pause=0)


def test_starts_what_docker_would_have_started_and_nothing_else(
    caplog: pytest.LogCaptureFixture,
) -> None:
    docker = FakeDocker(
        stopped("web"),
        stopped("db", policy="unless-stopped"),
        stopped("stopped-by-user", policy="unless-stopped", error=""),
        stopped("one-off", policy="no"),
    )
    with caplog.at_level(logging.INFO, logger="shim.revive"):
        outcome = reviver(docker).run()
    assert docker.started == ["web", "db"]
    assert outcome.started == ["web", "db"] and outcome.failed == {}
    assert docker.asked == ["pycni:latest"]  # one round: nothing was left
    text = caplog.text
    assert "container web (restart policy always): Docker could not start it while pycni was " \
        f"not serving (network net: {NOT_FOUND}); starting it" in text
    assert "container db started" in text
    assert "stopped-by-user" not in text and "one-off" not in text


def test_waits_a_bounded_number_of_rounds_for_docker() -> None:
    docker = FakeDocker(stopped("web"), down_for=2)
    outcome = reviver(docker).run()
    assert docker.started == ["web"] and not outcome.docker_down
    assert len(docker.asked) == 3

    docker = FakeDocker(stopped("web"), down_for=100)
    outcome = reviver(docker, rounds=4).run()
    assert outcome.docker_down and docker.started == []
    assert len(docker.asked) == 4


def test_a_failed_start_is_tried_again_then_named(caplog: pytest.LogCaptureFixture) -> None:
    docker = FakeDocker(stopped("web"), stopped("db"))
    docker.failing = {"web": 2}
    outcome = reviver(docker).run()
    assert docker.started == ["db", "web"] and outcome.failed == {}
    assert len(docker.asked) == 3

    docker = FakeDocker(stopped("web"))
    docker.failing = {"web": 100}
    with caplog.at_level(logging.INFO, logger="shim.revive"):
        outcome = reviver(docker, rounds=3).run()
    assert outcome.failed == {"web": "CNI plugin failed"} and docker.started == []
    assert len(docker.asked) == 3
    assert caplog.text.count("starting it") == 1  # said once, however many rounds
    assert "container web: still not started: CNI plugin failed (see pycni doctor)" in caplog.text


def test_a_container_started_meanwhile_is_left_alone() -> None:
    docker = FakeDocker(stopped("web"))
    docker.failing = {"web": 1}
    side = docker.side()
    rounds = 0

    def listing(driver_name: str) -> list[Stopped]:
        nonlocal rounds
        rounds += 1
        if rounds == 2:  # its user ran `docker start web` after the first round
            docker.containers = {
                k: dataclasses.replace(c, status="running") for k, c in docker.containers.items()}
        return docker.stopped(driver_name)

    side.stopped = listing
    outcome = Reviver("pycni", side, rounds=3, pause=0).run()
    assert docker.started == [] and outcome.failed == {} and rounds == 2


def test_the_thread_never_takes_the_server_down(caplog: pytest.LogCaptureFixture) -> None:
    def broken(driver_name: str) -> list[Stopped]:
        raise RuntimeError("a bug")

    rev = Reviver("pycni", DockerSide(stopped=broken, start=lambda cid: None), pause=0)
    rev.start()
    assert rev._thread is not None
    rev._thread.join(5)
    assert not rev._thread.is_alive()
    assert "starting containers Docker could not start failed" in caplog.text


def test_stop_ends_the_rounds() -> None:
    docker = FakeDocker(stopped("web"), down_for=100)
    rev = Reviver("pycni", docker.side(), rounds=1000, pause=0.01)
    rev.stop()
    rev.run()
    assert len(docker.asked) == 1
