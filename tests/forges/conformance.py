"""Every exchange with the test forge, checked against the forge's own API description.

GitHub: `github-pulls.openapi.json` (OpenAPI 3.0.3) with openapi-core, which
validates a request (path, query, body) and a response (status, body) as a
server and a client would. Gitea/Forgejo: `forgejo-pulls.swagger.json`
(Swagger 2.0) with bravado-core, which validates Swagger 2.0 as published:
openapi-core reads only OpenAPI 3, and converting the file first would check
our conversion as much as the client.

The descriptions live in `../shared/reference/forges/` beside the checkout;
where that folder is absent (a user's clone) the checks are skipped and
`Specs.reason` says so, while the behaviour tests still run. Requests are
always checked (they are the bridge's); responses are checked when the fake
answered as the forge (not an injected fault) with a status the description
lists. GitLab has no description here: its shapes follow its documentation.
Exchanges the subsets do not describe (GraphQL, Gitea's issue comments and
commit statuses) are counted, not silently passed.
"""

from __future__ import annotations

import functools
import json
import re
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.forges.fake.state import Exchange

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "reference" / "forges"
GITHUB_FILE = SHARED / "github-pulls.openapi.json"
FORGEJO_FILE = SHARED / "forgejo-pulls.swagger.json"


@dataclass
class Specs:
    github: Any = None  # openapi_core.OpenAPI
    forgejo: Any = None  # bravado_core.spec.Spec
    forgejo_ops: list[tuple[re.Pattern[str], int, Any]] = field(default_factory=list)
    reason: str = ""
    checked: Counter[str] = field(default_factory=Counter)
    undescribed: Counter[str] = field(default_factory=Counter)

    def available(self, kind: str) -> bool:
        return (kind == "github" and self.github is not None) or (
            kind == "gitea" and self.forgejo is not None
        )

    def violations(self, kind: str, exchanges: list[Exchange], prefix: str) -> list[str]:
        if not self.available(kind):
            return []
        # bravado-core and swagger-spec-validator still use jsonschema's RefResolver,
        # deprecated (a warning, which this suite turns into an error) but working.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            return self._violations(kind, exchanges, prefix)

    def _violations(self, kind: str, exchanges: list[Exchange], prefix: str) -> list[str]:
        found: list[str] = []
        for exchange in exchanges:
            path = exchange.path.removeprefix("/" + prefix)
            if path == exchange.path:  # outside the REST prefix: GraphQL
                self.undescribed[f"{kind} {exchange.method} {exchange.path}"] += 1
                continue
            check = self._github if kind == "github" else self._forgejo
            found += [
                f"{exchange.method} {exchange.path} -> {exchange.status}: {p}"
                for p in check(exchange, path)
            ]
        return found

    # --- GitHub (OpenAPI 3) -------------------------------------------------------------

    def _github(self, exchange: Exchange, path: str) -> list[str]:
        from openapi_core.templating.paths.exceptions import PathNotFound
        from openapi_core.templating.responses.exceptions import ResponseNotFound
        from openapi_core.testing import MockRequest, MockResponse

        request = MockRequest(
            "https://api.github.com",
            exchange.method.lower(),
            path,
            args={k: v[0] for k, v in exchange.query.items()},
            headers=exchange.headers,
            data=exchange.body or None,
            content_type=exchange.headers.get("content-type", "application/json").split(";")[0],
        )
        problems = []
        try:
            self.github.validate_request(request)
        except PathNotFound:
            self.undescribed[f"github {exchange.method} {path}"] += 1
            return []
        except Exception as e:  # the validator's own error tree; its text says what
            problems.append(f"request: {_describe(e)}")
        if exchange.injected:
            return problems
        response = MockResponse(
            exchange.response_body,
            status_code=exchange.status,
            headers=exchange.response_headers,
            content_type=exchange.response_headers.get("Content-Type", "").split(";")[0]
            or "application/json",
        )
        try:
            self.github.validate_response(request, response)
            self.checked["github"] += 1
        except ResponseNotFound:
            self.undescribed[f"github {exchange.method} {path} {exchange.status}"] += 1
        except Exception as e:
            problems.append(f"response: {_describe(e)}")
        return problems

    # --- Forgejo (Swagger 2.0) -----------------------------------------------------------

    def _forgejo(self, exchange: Exchange, path: str) -> list[str]:
        from bravado_core.exception import MatchingResponseNotFound
        from bravado_core.request import IncomingRequest, unmarshal_request
        from bravado_core.response import OutgoingResponse, get_response_spec, validate_response

        op, params = self._forgejo_op(exchange.method, path)
        if op is None:
            self.undescribed[f"gitea {exchange.method} {path}"] += 1
            return []

        class Req(IncomingRequest):  # type: ignore[misc]
            def __init__(self) -> None:
                self.path = params
                self.query = {k: v[0] if len(v) == 1 else v for k, v in exchange.query.items()}
                self.form: dict[str, Any] = {}
                self.files: dict[str, Any] = {}
                self.headers = exchange.headers

            def json(self, **_: Any) -> Any:
                return exchange.json()

        class Resp(OutgoingResponse):  # type: ignore[misc]
            def __init__(self) -> None:
                self.content_type = "application/json"
                self.text = exchange.response_body.decode()
                self.raw_bytes = exchange.response_body
                self.headers: dict[str, str] = {}

            def json(self, **_: Any) -> Any:
                return exchange.response_json()

        problems = []
        try:
            unmarshal_request(Req(), op)
        except Exception as e:
            problems.append(f"request: {_describe(e)}")
        if exchange.injected:
            return problems
        try:
            spec = get_response_spec(exchange.status, op)
        except MatchingResponseNotFound:
            self.undescribed[f"gitea {exchange.method} {path} {exchange.status}"] += 1
            return problems
        try:
            validate_response(spec, op, Resp())
            self.checked["gitea"] += 1
        except Exception as e:
            problems.append(f"response: {_describe(e)}")
        return problems

    def _forgejo_op(self, method: str, path: str) -> tuple[Any, dict[str, str]]:
        for regex, _, op in self.forgejo_ops:
            found = regex.match(path)
            if found and op.http_method.upper() == method:
                return op, found.groupdict()
        return None, {}


def _describe(error: BaseException) -> str:
    """The validator's findings, each with where in the document (not the whole value)."""
    found: list[str] = []
    seen: BaseException | None = error
    while seen is not None and not found:
        for inner in getattr(seen, "schema_errors", ()) or ():
            for leaf in _leaves(inner):
                found.append(f"{leaf.message[:200]} at {'/'.join(map(str, leaf.absolute_path))}")
        seen = seen.__cause__ or seen.__context__
    if not found:
        found.append(f"{type(error).__name__}: {str(error)[:300]}")
    return "; ".join(found[:8])


def _leaves(error: Any) -> list[Any]:
    """The innermost errors of a jsonschema error (oneOf/anyOf nest the useful ones)."""
    context = list(getattr(error, "context", None) or [])
    if not context:
        return [error]
    return [leaf for inner in context for leaf in _leaves(inner)]


@functools.cache
def load() -> Specs:
    """The two API descriptions, loaded once per process: every conftest that
    asks for them (tests/forges, tests/pullrequests) gets the same ones. A
    second load would fail offline (see the order below)."""
    if not GITHUB_FILE.exists() or not FORGEJO_FILE.exists():
        return Specs(
            reason=f"the forges' API descriptions are not at {SHARED} (a clone without "
            "../shared): conformance checks skipped, behaviour tests still run"
        )
    # bravado-core first: once openapi-core has registered the OpenAPI 3.1 dialect
    # with jsonschema, bravado's resolver tries to fetch its meta-schema online.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from bravado_core.spec import Spec

        forgejo = Spec.from_dict(
            json.loads(FORGEJO_FILE.read_text()),
            origin_url="",  # a file: URI base makes its resolver look for meta-schemas online
            config={
                "validate_requests": True,
                "validate_responses": True,
                "use_models": False,
                # Checking the description itself fetches meta-schemas over the network.
                "validate_swagger_spec": False,
            },
        )
    from openapi_core import OpenAPI

    github = OpenAPI.from_dict(json.loads(GITHUB_FILE.read_text()))
    ops = []
    for resource in forgejo.resources.values():
        for op in resource.operations.values():
            template = op.path_name
            literal = len([s for s in template.split("/") if s and not s.startswith("{")])
            regex = re.compile("^" + re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", template) + "$")
            ops.append((regex, literal, op))
    # A literal segment beats a template: `/pulls/7/merge` is `{index}/merge`, not `{base}/{head}`.
    ops.sort(key=lambda item: -item[1])
    return Specs(github=github, forgejo=forgejo, forgejo_ops=ops)
