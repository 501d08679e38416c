"""One pycni network across Docker hosts: subnet leases in etcd, VXLAN between the hosts.

* :mod:`.store` — the etcd seam (:class:`~.store.KV`) and the real client;
* :mod:`.leases` — the overlay's definition and the per-host subnet leases, as etcd keys;
* :mod:`.vtep` — the VXLAN device and its per-peer route, neighbour and fdb entries;
* :mod:`.manager` — joining, leaving, and the loop that keeps leases alive and peers programmed;
* :mod:`.chain` — the CNI chain of an overlay network on this host's lease.
"""
