"""The only git writer: persistent clone per target, commit, push, retry, sign.

Everything else hands it finished file maps and commit messages. Credentials
live only in the environment of git processes it starts, never in
`.git/config`, never in a log line.
"""

from bridge.formats.paths import check_repo_path
from bridge.publishing.repo import TargetRepo, clone_dir_name

__all__ = ["TargetRepo", "check_repo_path", "clone_dir_name"]
