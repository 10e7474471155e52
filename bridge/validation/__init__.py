"""Validation: every rendered root is built with real Kustomize and every object
it yields is checked against its schema (core kinds offline with
kubernetes-validate, custom resources against a schema folder) before anything
is committed. Runs Kustomize processes and worker processes; writes nothing
but scratch files, never git.
"""
