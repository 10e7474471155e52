"""What a running bridge tells people and machines: log lines (text or JSON,
never a secret), outside values escaped for terminals and tables, progress
bars, Prometheus metrics and health, and the bounded HTTP endpoint of
`run --listen`. Leaves: nothing here reconciles, renders or writes git.
"""
