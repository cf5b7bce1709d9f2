"""Who may talk to the web app: the Host check, the cross-site check and the token (docs/serve.md).

:func:`check_origin` is the one cross-site rule, a pure function of the request's headers, so that
every entry point applies the same one: :class:`Guard` runs it on each state-changing HTTP request
(any method but GET, HEAD and OPTIONS) and on each WebSocket handshake, before the route (and
before the body is read). A browser marks every request it sends on a page's behalf: ``Origin`` on
every cross-origin request and on every POST (Chromium, Safari, Firefox ≥ 70), and
``Sec-Fetch-Site`` (Chromium ≥ 76, Firefox ≥ 90, Safari ≥ 16.4). Requests with neither come from
programs (curl, Python, the tests), which could set any header anyway; they pass this check and
meet the token where there is one.
"""

from __future__ import annotations

import secrets
from collections.abc import Collection, Mapping
from http.cookies import CookieError, SimpleCookie
from urllib.parse import parse_qs

from starlette.responses import JSONResponse

__all__ = ["Guard", "check_origin", "own_origins", "PAGE_HEADER", "SAFE_METHODS", "LOOPBACK_HOSTS"]

LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "[::1]", "::1"}
COOKIE = "mtaffect_token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})  # read-only routes; OPTIONS gets no CORS grant
# The page's own writes carry this header (static/app.js). A foreign page cannot add a custom header
# to a cross-origin request without a CORS preflight, and this server grants none.
PAGE_HEADER = "x-mtaffect-page"
_SAME = ("same-origin", "none")  # "none": the user's own action (typed address, bookmark)


def own_origins(scheme: str, host: str | None) -> frozenset[str]:
    """The origin the browser sees for a request sent to ``Host: host``: ``scheme://host``.

    The browser built the Host header from the address it opened, so this is the page's own origin
    whether it reached the server directly (127.0.0.1, localhost or [::1] on the bound port) or
    through a forwarded port (``ssh -L 9000:127.0.0.1:8765``). The Host check has already refused
    names that are not loopback ones on a loopback server (DNS rebinding).
    """
    return frozenset({f"{scheme}://{host.lower()}"}) if host else frozenset()


def check_origin(headers: Mapping[str, str], allowed: Collection[str]) -> str | None:
    """Why a request must be refused as coming from another site, or None when it may pass.

    ``headers``: the request's headers with lower-case names; ``allowed``: the server's own origins
    (``scheme://host[:port]``, lower case, see :func:`own_origins`). Refused: ``Sec-Fetch-Site``
    ``cross-site`` or ``same-site`` (another port of the same host is the same *site*), any
    ``Origin`` not in ``allowed``, and ``Origin: null`` (sandboxed frames, ``data:`` pages, some
    redirects). A request with neither header passes: no browser sent it on a page's behalf.
    """
    site = headers.get("sec-fetch-site")
    if site is not None and site.strip().lower() not in _SAME:
        return f"cross-site request refused (Sec-Fetch-Site: {site})"
    origin = headers.get("origin")
    if origin is None:
        return None
    if origin.strip().lower() == "null":
        return "cross-site request refused (Origin: null, a sandboxed or opaque page)"
    if origin.strip().lower().rstrip("/") not in allowed:
        own = ", ".join(sorted(allowed)) or "no Host header"
        return f"cross-site request refused: Origin {origin} is not this server's ({own})"
    return None


def _refuse(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


class Guard:
    """ASGI middleware, in this order: Host on loopback, the cross-site check, the token.

    Every HTTP answer also says ``Cross-Origin-Resource-Policy: same-origin``.

    The Host check stops DNS-rebinding pages (a site whose name resolves to 127.0.0.1) from
    reading the API through the user's browser. The cross-site check (:func:`check_origin`, plus
    :data:`PAGE_HEADER` on a browser's HTTP writes) stops other sites from writing through it. The
    token (every request off loopback, or with ``--token``) may come as ``?token=`` (then kept in a
    cookie), an ``X-Mtaffect-Token`` header, or the cookie.
    """

    def __init__(self, app, token: str | None, loopback: bool) -> None:  # noqa: ANN001
        self.app, self.token, self.loopback = app, token, loopback

    async def __call__(self, scope, receive, send) -> None:  # noqa: ANN001
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        reason = self._refusal(scope, headers)
        if reason is not None and scope["type"] == "websocket":  # closed before accept: a 403 handshake
            return await send({"type": "websocket.close", "code": 1008, "reason": reason[1][:120]})
        if scope["type"] == "websocket":
            return await self.app(scope, receive, send)
        # every answer: other sites' pages may not embed it (<img>, <video>, <script>), which would tell
        # them whether a result exists; and the token's cookie when the token came in the address
        extra = [(b"cross-origin-resource-policy", b"same-origin")]
        if reason is None and self.token is not None and "token" in _query(scope):
            cookie = f"{COOKIE}={self.token}; Path=/; HttpOnly; SameSite=Strict"
            extra.append((b"set-cookie", cookie.encode()))

        async def send_with_headers(message) -> None:  # noqa: ANN001
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        app = self.app if reason is None else _refuse(*reason)
        return await app(scope, receive, send_with_headers)

    def _refusal(self, scope, headers: dict[str, str]) -> tuple[int, str] | None:  # noqa: ANN001
        host = headers.get("host", "")
        if self.loopback:
            name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
            if name not in LOOPBACK_HOSTS:
                return 403, f"host {host!r} refused: this server answers only 127.0.0.1"
        websocket = scope["type"] == "websocket"
        if websocket or scope["method"] not in SAFE_METHODS:
            scheme = scope.get("scheme", "http")
            scheme = {"ws": "http", "wss": "https"}.get(scheme, scheme)  # a handshake's Origin is http(s)
            reason = check_origin(headers, own_origins(scheme, host))
            if reason is not None:
                return 403, reason
            from_browser = "origin" in headers or "sec-fetch-site" in headers
            if not websocket and from_browser and PAGE_HEADER not in headers:
                return 403, ("request refused: a browser's write must come from this server's page "
                             "(no X-Mtaffect-Page header)")
        if self.token is None:
            return None
        cookie = SimpleCookie()
        try:
            cookie.load(headers.get("cookie", ""))
        except CookieError:  # a malformed Cookie header is no token
            cookie = SimpleCookie()
        offered = [
            *(_query(scope).get("token") or []),
            headers.get("x-mtaffect-token", ""),
            cookie[COOKIE].value if COOKIE in cookie else "",
        ]
        if not any(o and secrets.compare_digest(o, self.token) for o in offered):
            return 401, "a token is required: open the address printed by `mtaffect serve`"
        return None


def _query(scope) -> dict[str, list[str]]:  # noqa: ANN001
    return parse_qs(scope.get("query_string", b"").decode("latin-1"))
