"""The local control plane (`gitops-bridge control-plane serve`, the demo's and
the tests' control plane): the documented `/v2` subset over SQLite. Apart from
the product's client (bridge.controlplane), which never imports it.
"""
