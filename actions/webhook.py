"""webhook: POST the rendered JSON body with the action key as Idempotency-Key; a 2xx is success."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

from actions.base import ActionContext, ActionFailed
from journeys.engine.ledger import DueAction
from journeys.rules.model import duration_seconds

DEFAULT_TIMEOUT_SECONDS = 10.0


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A redirect is an answer, not a new destination: following it would leave the allowlist."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None  # urllib then raises HTTPError(3xx)


_OPENER = urllib.request.build_opener(_NoRedirects)


class WebhookExecutor:
    action_types = ("webhook",)

    def __init__(self, allow: tuple[str, ...] = ()):
        self.allow = allow  # checked at validation; checked again here in case rules changed under a pending action
        # (an empty allowlist allows nothing, as at validation)

    def is_internal(self, action: DueAction) -> bool:
        return False

    def apply(self, con, action: DueAction, ctx: ActionContext) -> None:
        raise NotImplementedError("webhooks are external")

    def deliver(self, action: DueAction, ctx: ActionContext) -> None:
        p = action.params
        if not any(p["url"].startswith(prefix) for prefix in self.allow):
            raise ActionFailed(f"{p['url']} is no longer allowed by journeys.yml webhooks.allow", permanent=True)
        variables = ctx.template_variables(action)
        body = json.dumps(_render(p.get("body"), ctx, variables)).encode()
        headers = {name: ctx.render(value, variables) for name, value in (p.get("headers") or {}).items()}
        headers.update({"Content-Type": "application/json", "Idempotency-Key": action.action_key})
        timeout = duration_seconds(p["timeout"]) if p.get("timeout") else DEFAULT_TIMEOUT_SECONDS
        request = urllib.request.Request(p["url"], data=body, headers=headers, method="POST")
        try:
            with _OPENER.open(request, timeout=timeout) as response:
                status = response.status
        except ValueError as e:  # e.g. a line break in a rendered header: bad data, retrying cannot help
            raise ActionFailed(f"cannot build the request: {e}", permanent=True) from None
        except urllib.error.HTTPError as e:
            raise ActionFailed(f"HTTP {e.code} from {p['url']}") from None
        except (urllib.error.URLError, OSError) as e:
            raise ActionFailed(f"{p['url']}: {type(e).__name__}: {getattr(e, 'reason', e)}") from None
        if not 200 <= status < 300:
            raise ActionFailed(f"HTTP {status} from {p['url']}")


def _render(value, ctx: ActionContext, variables: dict):
    """Every text inside the body is a template; numbers, booleans and structure stay as written."""
    if isinstance(value, str):
        return ctx.render(value, variables)
    if isinstance(value, dict):
        return {key: _render(item, ctx, variables) for key, item in value.items()}
    if isinstance(value, list):
        return [_render(item, ctx, variables) for item in value]
    return value
