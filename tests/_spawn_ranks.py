"""Spawn CPU ranks for the distributed tests (gloo): a port taken between choosing it and binding it (a race with
other processes) is retried on a new port; any other failure is raised."""

from __future__ import annotations

import socket
from collections.abc import Callable

import torch.multiprocessing as mp


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spawn_ranks(worker: Callable, world: int, out: str, tries: int = 3) -> None:
    """``worker(rank, world, port, out)`` in ``world`` processes."""
    for attempt in range(tries):
        try:
            mp.spawn(worker, args=(world, free_port(), out), nprocs=world, join=True)
            return
        except mp.ProcessRaisedException as err:
            text = str(err).lower()
            if attempt + 1 == tries or not ("address already in use" in text or "distnetworkerror" in text):
                raise
