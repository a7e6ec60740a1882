"""``executor=ray``'s connection to its cluster: import Ray, find the cluster
(``executor.address``, ``RAY_ADDRESS``, the last ``ray start`` here) and connect within
``executor.connect_timeout_s``, or say in one line why not. The actors and the work are in
:mod:`.ray`."""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
from types import FrameType
from typing import Any

from pipeline.errors import ExecutorError

log = logging.getLogger(__name__)

NAMESPACE = "video-caption"


def import_ray() -> Any:
    """The ``ray`` module.

    Raises:
        ExecutorError: Ray is not installed.
    """
    try:
        import ray
    except ImportError:
        raise ExecutorError('executor=ray needs Ray: pip install ".[ray]"') from None
    return ray


def connect(ray: Any, address: str, connect_timeout_s: float) -> bool:
    """Connect to the cluster that ``address`` names (``auto``, ``local`` or ``HOST:PORT``, as
    ``executor.address``), or start a local one.

    Returns:
        Whether this call connected (``False``: a library caller's connection was there
        already: it is used, and left open).

    Raises:
        ExecutorError: No cluster answers there within ``connect_timeout_s``.
    """
    if ray.is_initialized():
        return False
    found, found_by = _cluster_address(address)
    if found is None:
        log.info("no Ray cluster running; starting a local one")
    else:
        _reach(found, found_by, connect_timeout_s)
    # ray.init sets a SIGTERM handler that exits at once; the command line's own
    # (pipeline.signals: the run summary, exit 143) comes back after it. Something that
    # accepts connections but does not answer keeps ray.init retrying for many minutes:
    # an alarm ends that wait (when ray.init next runs Python, within about 40 s more).
    on_main = threading.current_thread() is threading.main_thread()
    sigterm = signal.getsignal(signal.SIGTERM)
    alarm = signal.getsignal(signal.SIGALRM)
    if on_main and found is not None:
        signal.signal(signal.SIGALRM, _connect_timed_out)
        signal.setitimer(signal.ITIMER_REAL, connect_timeout_s)
    try:
        ray.init(address=found or "local", namespace=NAMESPACE, logging_level=logging.WARNING)
    except _ConnectTimeout:
        raise ExecutorError(
            f"no answer from a Ray cluster at {found} (from {found_by}) within "
            f"executor.connect_timeout_s={connect_timeout_s:g}; check that a Ray head runs there, "
            "fix the address, or use executor.address=local"
        ) from None
    except (ConnectionError, RuntimeError, ValueError) as error:
        raise ExecutorError(
            f"cannot connect to a Ray cluster at {found} ({found_by}): "
            f"{str(error).splitlines()[0]}; start one with `ray start --head` or fix the address"
        ) from error
    finally:
        if on_main:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, alarm)
            signal.signal(signal.SIGTERM, sigterm)
    return True


def _cluster_address(address: str) -> tuple[str | None, str]:
    """The cluster to connect to (``None``: start a local one) and how it was found."""
    if address == "local":
        return None, "executor.address=local"
    if address != "auto":
        return address, "executor.address"
    if os.environ.get("RAY_ADDRESS"):
        return os.environ["RAY_ADDRESS"], "RAY_ADDRESS, for executor.address=auto"
    from ray._private.services import get_ray_address_from_environment

    try:
        found = get_ray_address_from_environment("auto", None)
    except ConnectionError:
        return None, "executor.address=auto: no cluster running"
    return found, "executor.address=auto: the last `ray start` on this machine, or a Ray process running here"


def _reach(address: str, found_by: str, connect_timeout_s: float) -> None:
    """Open a TCP connection to ``address`` within ``connect_timeout_s``.

    Raises:
        ExecutorError: Nothing answers there (one line: the address and where it came from).
    """
    host, _, port = address.split("://")[-1].rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=connect_timeout_s):
            return
    except (OSError, ValueError) as error:
        why = "timed out" if isinstance(error, TimeoutError) else getattr(error, "strerror", None) or str(error)
        raise ExecutorError(
            f"cannot reach a Ray cluster at {address} (from {found_by}) within "
            f"executor.connect_timeout_s={connect_timeout_s:g}: {why}; start it (`ray start --head`), "
            "fix the address, or use executor.address=local"
        ) from None


class _ConnectTimeout(BaseException):
    """``executor.connect_timeout_s`` passed while ``ray.init`` was connecting (a
    ``BaseException``: Ray's own ``except Exception`` must not take it)."""


def _connect_timed_out(signum: int, frame: FrameType | None) -> None:
    raise _ConnectTimeout
