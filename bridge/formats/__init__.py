"""The byte formats the bridge writes into git and reads back: canonical YAML,
commit messages with their trailers, the state file of each deployment folder,
approvals of held deletions, the generated README. Pure leaves: no I/O, no
git, nothing of the bridge but config, errors and models.
"""
