"""Connecting a search to Ray (--backend ray), before Ray is imported: a local instance
and a cluster addressed as 127.0.0.1 / localhost stay on the loopback interface, which
needs RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 in the environment when Ray is imported (without
it Ray 2.60 swaps 127.0.0.1 for the machine's address and listens on every interface).
Importing this module does not import Ray."""

from __future__ import annotations

import os
import sys
import warnings
from typing import Optional

from autocompress.errors import ConfigError, one_line


def open_session(address: Optional[str], *, cpus_per_trial: float = 1.0, max_concurrent: Optional[int] = None,
                 latency_resource: Optional[str] = None, accuracy_on_device: bool = False):
    """A RaySession (backends.ray_tune) connected to `address` (None: a local instance
    started for the run); refused with one line (ConfigError) when Ray is missing, the
    cluster cannot be reached or lacks `latency_resource`."""
    host = (address or "").rpartition(":")[0]
    if address is None or host in ("127.0.0.1", "localhost"):
        if "ray" in sys.modules and os.environ.get("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER") != "0":
            warnings.warn("Ray was imported before the search set RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0: it may listen beyond loopback")
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    try:
        from autocompress.backends.ray_tune import RayOptions, RaySession
    except ImportError as exc:
        raise ConfigError(f"--backend ray needs Ray Tune ({one_line(exc)}); install it with: pip install 'autocompress[ray]'") from None
    opts = RayOptions(address=address, cpus_per_trial=cpus_per_trial, max_concurrent=max_concurrent,
                      latency_resource=latency_resource, accuracy_on_device=accuracy_on_device)
    try:
        return RaySession(opts)
    except (ConnectionError, ValueError) as exc:
        raise ConfigError(str(exc)) from None


__all__ = ["open_session"]
