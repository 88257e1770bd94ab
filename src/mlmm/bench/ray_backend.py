"""``--backend ray``: cells as Ray tasks on an existing cluster, or on a local Ray instance.

Ray is an optional extra (``pip install "mlmm[ray]"``); every node of the
cluster needs the same mlmm (and torch) installed. Each task asks for
``threads`` CPUs and runs ``execute_cell``; its result comes back to the
driver, which writes the store, exactly as with the local pool.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from .execute import execute_cell

__all__ = ["RayBackend", "require_ray"]


def require_ray():
    try:
        import ray
    except ImportError:
        raise ValueError('--backend ray needs Ray: pip install "mlmm[ray]"') from None
    return ray


class RayBackend:
    """Ray tasks; at most ``workers`` in flight (default: the cluster's CPUs / ``threads``).

    ``address``: the cluster to join (``ray://host:10001``, ``host:6379`` or ``auto``); None
    starts a local instance with ``workers`` CPUs (all cores if None), shut down at the end.
    A driver already connected to Ray (``ray.is_initialized()``) is used as it is.
    """

    name = "ray"

    def __init__(self, address: str | None = None, workers: int | None = None, threads: int = 1) -> None:
        self.address = address
        self.workers = workers
        self.threads = threads

    def run(self, payloads: list[dict[str, Any]]) -> Iterator[tuple]:
        ray = require_ray()
        started_here = False
        if not ray.is_initialized():
            kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                                      "configure_logging": False}
            if self.address is None and self.workers is not None:
                kwargs["num_cpus"] = self.workers * self.threads
            try:
                ray.init(address=self.address, **kwargs)
            except Exception as err:  # noqa: BLE001 - Ray raises bare Exception on a start-up timeout
                where = f"at {self.address!r}" if self.address else "locally"
                message = " ".join(str(err).split())
                raise ValueError(f"cannot start or reach a Ray cluster {where}: {message}") from None
            started_here = True
        try:
            limit = self.workers or max(1, int(ray.cluster_resources().get("CPU", 1)) // self.threads)
            task = ray.remote(num_cpus=self.threads, max_retries=0)(execute_cell)
            todo = iter(enumerate(payloads))
            running: dict[Any, int] = {}
            failed = False
            while True:
                while not failed and len(running) < limit:
                    nxt = next(todo, None)
                    if nxt is None:
                        break
                    running[task.remote(nxt[1], self.threads)] = nxt[0]
                    yield ("start", nxt[0])
                if not running:
                    return
                ready, _ = ray.wait(list(running), num_returns=1)
                for ref in ready:
                    i = running.pop(ref)
                    try:
                        result = ray.get(ref)
                    except Exception as err:  # noqa: BLE001 - RayTaskError wraps the cell's error
                        failed = True
                        cause = getattr(err, "cause", None) or err
                        yield ("error", i, f"{type(cause).__name__}: {cause}".splitlines()[0])
                    else:
                        yield ("done", i, result)
        finally:
            if started_here:
                ray.shutdown()
