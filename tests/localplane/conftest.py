"""The local control plane's tests use the client tests' running plane."""

from tests.controlplane.conftest import plane

__all__ = ["plane"]
