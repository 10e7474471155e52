"""langsmith-gitops-bridge: a LangSmith listener that commits to git instead of applying."""

__version__ = "0.1.0"

# Bumped whenever the bytes the renderer writes for the same input change.
# It is part of every input digest, so a bridge upgrade that renders
# differently re-renders everything once, and one that does not, commits nothing.
RENDER_SCHEMA = 1
