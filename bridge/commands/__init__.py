"""What each command does, beside the thin click layer (bridge/cli.py): `run`
(the loop), `status`, `audit`, `bootstrap`, `demo`, offline `render` and
`validate`, and the wiring that builds a reconciler with its real parts.
Nothing below this package imports it.
"""
