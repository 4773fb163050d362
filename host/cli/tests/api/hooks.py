"""Schemathesis hooks for testing a cart-host edge.

A link from createCart's 201 gives later steps the cart's own token in `Authorization`
(schema/openapi.yaml). Schemathesis 4.32 sends it, but its `ignored_auth` check only counts
credentials from `--auth`/`-H`/config or an auth provider as real; a link-supplied one is taken
for a *generated* (invalid) credential, so every 2xx with it is reported as "API accepts invalid
authentication" (schemathesis/specs/openapi/checks.py, `_contains_auth`).

This provider claims, as explicit auth, exactly the bearer tokens this edge issued in a
`POST /v1/carts` answer during the run. `ignored_auth` then probes those requests without a
token and with a wrong one and expects 401/403, instead of failing them. Random tokens drawn by
the generator are never claimed, so the check keeps testing them as before.
"""

import threading

import schemathesis

_issued: set[str] = set()
_lock = threading.Lock()


@schemathesis.hook
def after_call(context, case, response):
    if case.operation.method.upper() == "POST" and case.operation.path == "/v1/carts" and response.status_code == 201:
        try:
            token = response.json().get("cart_token")
        except Exception:
            return
        if isinstance(token, str):
            with _lock:
                _issued.add(token)


@schemathesis.auth(refresh_interval=None).apply_to(path_regex=r"^/v1/carts/")
class IssuedCartToken:
    """Marks a link-supplied, server-issued cart token as explicit auth; never invents one."""

    def get(self, case, context):
        value = (case.headers or {}).get("Authorization")
        if isinstance(value, str) and value.startswith("Bearer "):
            with _lock:
                if value[len("Bearer "):] in _issued:
                    return value
        return None

    def set(self, case, data, context):
        case.headers = case.headers or {}
        case.headers["Authorization"] = data
