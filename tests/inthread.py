"""Hospital nodes that run in threads of the test process (real mutual TLS on loopback)."""

from __future__ import annotations

import threading
from pathlib import Path


def inthread_nodes(node_configs: dict[str, Path], hospitals: list[str],
                   give_up_seconds: float) -> list:
    """One built :class:`~fedrx.nodes.hospital.HospitalNode` per hospital, from its config
    file; their training is serialised (torch's global RNG is per process, so two threads
    training at once would make the runs irreproducible)."""
    from fedrx.nodes.config import load_node_config
    from fedrx.nodes.hospital import HospitalNode

    train_lock = threading.Lock()
    nodes = []
    for h in hospitals:
        cfg, data, privacy = load_node_config(node_configs[h])
        cfg.give_up_seconds = give_up_seconds
        node = HospitalNode(cfg, data, privacy)
        party = node.build_party()
        inner = party.handle

        def handle(stage, req, inner=inner):
            with train_lock:
                return inner(stage, req)

        party.handle = handle
        nodes.append(node)
    return nodes
