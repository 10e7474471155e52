"""Values that must never be printed: API keys, passwords, secret env values.

`Redacted` hides its value from `str`, `repr`, `format`, logging and pickling;
code that really needs the value calls `reveal()`, which is easy to grep for.
"""

from __future__ import annotations

import hmac
import re
from typing import NoReturn
from urllib.parse import urlsplit, urlunsplit

MASK = "****"


class Redacted:
    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = str(value)

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return f"Redacted({MASK!r})"

    def __str__(self) -> str:
        return MASK

    def __format__(self, spec: str) -> str:
        return MASK

    def __bool__(self) -> bool:
        return bool(self._value)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Redacted):
            return NotImplemented
        return hmac.compare_digest(self._value.encode(), other._value.encode())

    def __hash__(self) -> int:
        return hash(("Redacted", self._value))

    def __reduce__(self) -> NoReturn:
        raise TypeError("a Redacted value cannot be pickled")


_USERINFO = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)(?P<userinfo>[^@/\s]+)@", re.IGNORECASE)


def redact_url(url: str) -> str:
    """`https://user:pw@host/x` -> `https://user:****@host/x`; other URLs unchanged."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return _USERINFO.sub(lambda m: f"{m['scheme']}{MASK}@", url)
    if parts.password is None:
        return url
    netloc = f"{parts.username}:{MASK}@{parts.hostname or ''}"
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def scrub(text: str, *secrets: Redacted | str | None) -> str:
    """Remove every given secret (and URL passwords) from a message before it is shown."""
    for secret in secrets:
        value = secret.reveal() if isinstance(secret, Redacted) else secret
        if value and len(value) >= 4:
            text = text.replace(value, MASK)
    return _USERINFO.sub(
        lambda m: (
            f"{m['scheme']}{m['userinfo'].split(':', 1)[0]}:{MASK}@"
            if ":" in m["userinfo"]
            else m[0]
        ),
        text,
    )
