"""Shared fixtures. Everything here is real: processes, sockets, repos."""
