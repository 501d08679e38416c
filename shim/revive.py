"""Containers Docker gave up on because pycni was not serving yet, started when it is.

As dockerd starts it restores containers (moby ``daemon.restore``): each one that is not running
and has been started before is asked of its restart manager (``restartmanager.ShouldRestart``)
— ``always``: yes; ``unless-stopped``: unless its user stopped it; ``on-failure``: if it exited
non-zero and retries remain — and the ones it says yes to are started. Starting one on a pycni
network needs pycni: Docker looks for the plugin's socket for about 30 seconds
(``pkg/plugins`` ``loadWithRetry``), then the start fails (``plugin "pycni" not found``) and the
container stays Exited for good — its restart manager only acts when a container exits, and this
one never ran. pycni is meant to start before Docker (``contrib/pycni.service``); when it
started after, this module does what Docker would have done, once pycni serves.

Which containers: Docker's API does not show whether a user stopped a container
(``HasBeenManuallyStopped``), but it shows the trace of Docker's own attempt. A start that fails
sets ``State.Error``, and any start that succeeds clears it, so a container its user stopped
after it ran has none, while one Docker tried and failed to start at its own start-up carries
the failure. :func:`should_start` is Docker's decision over what the API shows: exited, started
before, a failed start on record, and a policy Docker honours at start-up — on one of this
driver's networks (:attr:`~shim.settings.Settings.driver_name`).

:class:`Reviver` runs beside serving (Docker must reach the driver while it starts them), in a
thread of its own, with a bounded number of rounds: Docker may not answer yet (pycni started
first: then Docker restores everything itself, and there is nothing to do). Every container it
starts, or fails to start, is logged; ``pycni doctor`` names the ones still stranded. Docker is
asked through :class:`DockerSide`, a seam of two functions a test replaces.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from . import dockerstart
from .dockerstart import Stopped
from .errors import PycniError

log = logging.getLogger(__name__)

#: rounds and the pause between them: about two minutes for Docker to answer, or for a start
#: that failed to succeed (a plugin of the chain missing for a moment, Docker still busy)
ROUNDS = 40
PAUSE = 3.0


def should_start(container: Stopped) -> str:
    """Why Docker would have started ``container`` as it started, and failed to ("" if not):
    moby's ``restartmanager.ShouldRestart`` over what Docker's API shows."""
    if container.status != "exited" or not container.started_before or not container.error:
        return ""
    policy = container.policy
    if policy == "always":
        return "restart policy always"
    if policy == "unless-stopped":
        # A failed start on record: its user did not stop it (a stop leaves no error).
        return "restart policy unless-stopped"
    retries_left = container.max_retries == 0 or container.restart_count < container.max_retries
    if policy == "on-failure" and container.exit_code != 0 and retries_left:
        return f"restart policy on-failure, exit code {container.exit_code}"
    return ""


def stranded(containers: list[Stopped]) -> list[tuple[Stopped, str]]:
    """The containers Docker would have started, with why."""
    return [(c, why) for c in containers if (why := should_start(c))]


@dataclass
class DockerSide:
    """What the reviver asks of Docker (:mod:`shim.dockerstart`); tests replace either."""

    #: the exited containers on the driver's networks; PycniError if Docker can't be asked
    stopped: Callable[[str], list[Stopped]] = dockerstart.stopped_containers
    #: ``docker start``; PycniError with Docker's reason if it fails
    start: Callable[[str], None] = dockerstart.start_container


@dataclass
class Outcome:
    #: names of the containers started
    started: list[str] = field(default_factory=list)
    #: name → Docker's reason, for those still not started after the last round
    failed: dict[str, str] = field(default_factory=dict)
    #: Docker did not answer the last time it was asked
    docker_down: bool = False
    #: ids of the containers tried at least once
    tried: set[str] = field(default_factory=set)


class Reviver:
    """Starts the containers :func:`should_start` names, in rounds until none is left."""

    def __init__(
        self,
        driver_name: str,
        docker: DockerSide | None = None,
        *,
        rounds: int = ROUNDS,
        pause: float = PAUSE,
    ) -> None:
        self.driver_name = driver_name
        self.docker = docker or DockerSide()
        self.rounds = rounds
        self.pause = pause
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="pycni-revive", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        try:
            self.run()
        except Exception:  # a bug here must never take the server down
            log.exception("starting containers Docker could not start failed")

    def run(self) -> Outcome:
        outcome = Outcome()
        for n in range(self.rounds):
            if n and self._stop.wait(self.pause):
                break
            try:
                todo = stranded(self.docker.stopped(self.driver_name))
            except PycniError as exc:
                log.debug("revive: Docker does not answer yet (%s)", exc)
                outcome.docker_down = True
                continue
            outcome.docker_down = False
            outcome.failed = {}
            for container, why in todo:
                self._start(container, why, outcome)
            if not outcome.failed:
                break
        if outcome.docker_down:
            log.info("revive: Docker did not answer; it starts its containers itself once it does")
        for name, reason in outcome.failed.items():
            log.warning("container %s: still not started: %s (see pycni doctor)", name, reason)
        return outcome

    def _start(self, container: Stopped, why: str, outcome: Outcome) -> None:
        if container.id not in outcome.tried:
            outcome.tried.add(container.id)
            log.info(
                "container %s (%s): Docker could not start it while pycni was not serving "
                "(network %s: %s); starting it",
                container.name, why, ", ".join(container.networks), container.error,
            )
        try:
            self.docker.start(container.id)
        except PycniError as exc:
            outcome.failed[container.name] = str(exc)
            log.info("container %s: start failed: %s", container.name, exc)
            return
        outcome.started.append(container.name)
        log.info("container %s started", container.name)
