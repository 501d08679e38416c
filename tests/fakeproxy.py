"""A stand-in for pycni's userland proxy (:class:`shim.proxy.Proxies`): it remembers what each
endpoint would listen on and binds nothing, so unit tests never hold a host port."""

from __future__ import annotations

from collections.abc import Iterable

from shim.errors import InvalidRequest
from shim.ports import Mapping
from shim.proxy import Proxies, listeners


class FakeProxies(Proxies):
    """What the driver asked for, by endpoint; ``taken`` host ports refuse to be listened on."""

    def __init__(self) -> None:
        super().__init__()
        self.running: dict[str, list[str]] = {}
        self.taken: set[int] = set()

    def start(self, owner: str, mappings: Iterable[Mapping], addresses: Iterable[str]) -> None:
        wanted = listeners(mappings, addresses)
        self.stop(owner)
        for item in wanted:
            if item.host_port in self.taken:
                raise InvalidRequest(
                    f"cannot publish {item.target_port}/{item.protocol}: port "
                    f"{item.host_port} on {item.host_ip} is already in use")
        if wanted:
            self.running[owner] = [str(item) for item in wanted]

    def stop(self, owner: str) -> None:
        self.running.pop(owner, None)

    def serving(self) -> dict[str, list[str]]:
        return {owner: list(items) for owner, items in self.running.items()}
