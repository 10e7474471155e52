"""Pull-request mode (SPEC §6a): a target's changes proposed in pull requests
on GitHub, GitLab or Gitea/Forgejo instead of pushed to its branch.

`PullRequestPublisher` is the `Publisher` (bridge.reconcile.plans); the rest is
its parts: head branches in the target's clone (`branches`), what the bridge
owns and whose commits are (`ownership`), what a pull request proposes and
the commits that bring its head there (`proposal`), merging the base into a
head (`merging`), texts and hidden markers (`describing`), the forge side
(`pulls`) and one pull request's turn (`rolling`).
"""

from bridge.publishing.pullrequest.publisher import HELD_SUFFIX, PullRequestPublisher

__all__ = ["HELD_SUFFIX", "PullRequestPublisher"]
