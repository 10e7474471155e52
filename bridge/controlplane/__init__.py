"""The product's control-plane client: the listener's deployments, complete or
not at all, every read bounded. The only package of the bridge that talks to
the control plane (and, with bridge.forges and bridge.health, one of the few
that imports httpx). The local control plane is bridge.localplane.
"""
