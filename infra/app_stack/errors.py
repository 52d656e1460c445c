"""Deploy failures: one class each, every message naming what to do next (kinds shown by the CLI)."""

from __future__ import annotations

from infra.errors import SpacedError


class DeployError(SpacedError):
    """Base of every deploy failure; `str()` is a message naming what to do next."""

    kind = "DeployError"


class SwarmInactiveError(DeployError):
    """The engine is not a swarm manager."""

    kind = "SwarmInactive"


class PortInUseError(DeployError):
    """A port the local stack publishes is taken by another program."""

    kind = "PortInUse"


class ConvergenceError(DeployError):
    """A service did not reach its desired healthy tasks in time (it has been rolled back)."""

    kind = "ServiceUnhealthy"


class ImagesUnavailableError(DeployError):
    """The local image builder (infra.images) cannot be imported."""

    kind = "ImagesUnavailable"
