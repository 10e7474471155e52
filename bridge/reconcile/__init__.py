"""One reconcile cycle as stages with values between them (docs/ARCHITECTURE.md):

    listing (control plane) -> Draft (planning) -> Decision (guard)
        -> Plan -> Publisher.publish -> CycleReport

`cycle` runs every owned target; `stages` runs one target's stages with their
retries; `planning` and `deployments` decide what to commit; `guard` holds
mass deletions; `plans` holds the values and the two seams (`TreeView`,
`Publisher`). Planning and the guard never write git.
"""
