"""The dashboard's pages, one signed-in request at a time (no I/O: they yield it).

``Visit`` holds what every page needs (the request, the caller, the form
token) and has one method per page and action. Reads and writes go through
``KeyCall`` effects, which ``_core``'s drivers answer with ``ks.keys`` or
its ``a``-prefixed twins, so each page is written once for both doors.
"""

from __future__ import annotations

import secrets
from collections.abc import Generator, Mapping
from typing import TYPE_CHECKING, Any

from keystile.dashboard._answers import (
    Effect,
    Flow,
    Page,
    PageRequest,
    Redirect,
    Refused,
)
from keystile.dashboard._forms import (
    CUSTOM,
    EXPIRY_CHOICES,
    GRACE_CHOICES,
    Form,
    Invalid,
    Permissions,
    field_of,
    read_allowed_ips,
    read_create,
    read_grace,
    sentence,
)
from keystile.dashboard._views import chart_of, key_view, successors
from keystile.errors import KeyConflict, KeyInputError, KeyNotFound
from keystile.lifecycle import check_name
from keystile.management._effects import KeyCall
from keystile.management._input import Caller
from keystile.stores.base import KeyRecord

if TYPE_CHECKING:
    from keystile.engine import Keystile

__all__ = ["FORM_ID_KEY", "USAGE_DAYS", "Pages", "ShownOnce", "Visit"]

FORM_ID_KEY = "dashboard_form"
"""The metadata entry holding the create form's one-time id (how a re-POST finds its key)."""
USAGE_DAYS = 30


class ShownOnce(str):
    """A new key's secret on its way to the one page that shows it.

    A ``str`` for the template, whose ``repr`` (in a page's context, a log
    line, a traceback's captured locals) never shows it.
    """

    __slots__ = ()

    def __repr__(self) -> str:
        return "ShownOnce(<hidden>)"


class Pages:
    """What the pages of one engine share: its config's permission choices."""

    def __init__(self, ks: Keystile, permissions: Permissions) -> None:
        self.ks = ks
        self.permissions = permissions
        self.default_scopes = tuple(ks.config.scopes.default)
        self.default_preset = next(
            (p.name for p in permissions.presets if p.name == "read-only"),
            permissions.presets[0].name if permissions.presets else CUSTOM,
        )

    def error(
        self,
        request: PageRequest,
        caller: Caller | None,
        status: int,
        title: str,
        message: str,
        headers: tuple[tuple[str, str], ...] = (),
    ) -> Page:
        context = {"base": request.href_base, "caller": caller, "title": title, "message": message}
        return Page(status, "error.html", context, headers)

    def bound(self, request: PageRequest, caller: Caller, token: str) -> Visit:
        return Visit(self, request, caller, token)


class Visit:
    """One signed-in request: its pages (``show``, GET) and actions (``act``, POST)."""

    def __init__(self, pages: Pages, request: PageRequest, caller: Caller, token: str) -> None:
        self.pages = pages
        self.ks = pages.ks
        self.permissions = pages.permissions
        self.request = request
        self.caller = caller
        self.token = token
        self.base = request.href_base

    def page(self, status: int, template: str, title: str, **context: Any) -> Page:
        common = {
            "base": self.base,
            "caller": self.caller,
            "csrf_token": self.token,
            "title": title,
        }
        return Page(status, template, {**common, **context})

    def refused(self, err: Refused) -> Page:
        return self.pages.error(
            self.request, self.caller, err.status, err.title, err.message, err.headers
        )

    def show(self, page: str, key_id: str | None) -> Flow:
        if page == "list":
            return (yield from self.list())
        if page == "new":
            return self.new_form()
        if page == "key":
            return (yield from self.key_page(str(key_id)))
        return (yield from self.revoke_confirm(str(key_id)))

    def act(self, page: str, key_id: str | None, form: Form) -> Flow:
        if page == "new":
            return (yield from self.create(form))
        if page == "key":
            return (yield from self.save(str(key_id), form))
        if page == "rotate":
            return (yield from self.rotate(str(key_id), form))
        return (yield from self.revoke(str(key_id)))

    # -- the list ----------------------------------------------------------------------

    def list(self) -> Flow:
        org = self.caller.org
        records: list[KeyRecord] = yield KeyCall("list", (org,))
        totals: dict[str, int] = {}
        if self.ks.counting:
            totals = yield KeyCall("usage_totals", (org,), {"days": USAGE_DAYS})
        now = self.ks.now()
        after = successors(records)
        rows = [
            self._view(r, requests=totals.get(r.id, 0), successor=after.get(r.id), now=now)
            for r in sorted(records, key=lambda r: (r.created_at.timestamp(), r.id), reverse=True)
        ]
        flash = None
        revoked = self.request.arg("revoked")
        if revoked:
            # Said after the redirect (the key is gone from the list by then).
            try:
                gone: KeyRecord = yield KeyCall("get", (revoked,))
            except KeyNotFound:
                gone = None  # type: ignore[assignment]
            if gone is not None and gone.org == org and gone.revoked_at is not None:
                flash = (
                    f"Revoked “{gone.name}” ({gone.prefix}…{gone.last4}). "
                    "Requests with it now get 401."
                )
        return self.page(200, "list.html", "API keys", keys=rows, flash=flash)

    # -- create ---------------------------------------------------------------------------

    def new_form(
        self,
        form: Form | None = None,
        errors: Mapping[str, str] | None = None,
        status: int = 200,
    ) -> Page:
        if form is None:
            values = {
                "name": "",
                "kind": "bot",
                "permissions": self.pages.default_preset,
                "expires": "never",
                "form_id": secrets.token_urlsafe(18),
            }
            checked: list[str] = list(self.pages.default_scopes)
        else:  # a refused form comes back as it was sent
            values = {
                name: form.one(name) or "" for name in ("name", "kind", "permissions", "expires")
            }
            values["form_id"] = form.one("form_id") or secrets.token_urlsafe(18)
            checked = form.all("scope")
        return self.page(
            status,
            "new.html",
            "Create key",
            values=values,
            errors=dict(errors or {}),
            permissions=self.permissions.choices(),
            groups=self.permissions.groups(self.caller, checked),
            presets=self.permissions.presets,
            expiry_choices=EXPIRY_CHOICES,
        )

    def create(self, form: Form) -> Flow:
        try:
            data = read_create(form, self.caller, self.permissions)
        except Invalid as err:
            return self.new_form(form, err.errors, 400)
        # A reload of this POST sends the same form id again: show the key it
        # made (never its secret again), and make no second one.
        everything: list[KeyRecord] = yield KeyCall("list_all", (self.caller.org,))
        for record in everything:
            if record.metadata.get(FORM_ID_KEY) == data.form_id:
                return self.page(
                    200,
                    "shown.html",
                    "Key already created",
                    key=self._view(record),
                    secret=None,
                    action="created",
                    grace=None,
                )
        try:
            new = yield KeyCall(
                "create",
                (data.name,),
                {
                    "scopes": data.scopes,
                    "org": self.caller.org,
                    "kind": data.kind,
                    "user": self.caller.user if data.kind == "user" else None,
                    "created_by": self.caller.user,
                    "expires_in_days": data.expires_in_days,
                    "metadata": {FORM_ID_KEY: data.form_id},
                },
            )
        except KeyConflict:
            message = (
                "You already have a user key in this organization. "
                "Revoke it first, or create a bot key."
            )
            return self.new_form(form, {"kind": message}, 409)
        except KeyInputError as err:
            return self.new_form(form, {field_of(err) or "name": sentence(str(err))}, 400)
        return self.page(
            201,
            "shown.html",
            "Key created",
            key=self._view(new.record),
            secret=ShownOnce(new.secret),
            action="created",
            grace=None,
        )

    # -- one key ------------------------------------------------------------------------

    def key_page(
        self,
        key_id: str,
        form: Form | None = None,
        errors: Mapping[str, str] | None = None,
        status: int = 200,
    ) -> Flow:
        record = yield from self._find(key_id)
        active: list[KeyRecord] = yield KeyCall("list", (self.caller.org,))
        days = None
        if self.ks.counting:
            days = yield KeyCall("usage", (key_id,), {"days": USAGE_DAYS})
        chart = chart_of(days) if days is not None else None
        view = self._view(
            record,
            requests=chart.total if chart else 0,
            successor=successors(active).get(record.id),
        )
        if form is None:
            values = {
                "name": record.name,
                "permissions": self.permissions.preset_of(record.scopes),
                "allowed_ips": "\n".join(record.allowed_ips),
                "grace": "24h",
            }
            checked: list[str] = list(record.scopes)
        else:
            values = {n: form.one(n) or "" for n in ("name", "permissions", "allowed_ips", "grace")}
            checked = form.all("scope")
        flash = "Changes saved." if self.request.arg("saved") == "1" else None
        if self.request.arg("saved") == "0":
            flash = "Nothing to change."
        return self.page(
            status,
            "key.html",
            record.name,
            key=view,
            chart=chart,
            values=values,
            errors=dict(errors or {}),
            flash=flash,
            permissions=self.permissions.choices(),
            groups=self.permissions.groups(self.caller, checked, held=record.scopes),
            presets=self.permissions.presets,
            grace_choices=GRACE_CHOICES,
        )

    def save(self, key_id: str, form: Form) -> Flow:
        record = yield from self._own(key_id)
        errors: dict[str, str] = {}
        changes: dict[str, Any] = {}
        try:
            name = check_name(form.one("name") or "")
            if name != record.name:
                changes["name"] = name
        except KeyInputError as err:
            errors["name"] = sentence(str(err))
        try:
            scopes = self.permissions.read(form, self.caller, held=record.scopes)
            if scopes != record.scopes:
                changes["scopes"] = scopes
        except Invalid as err:
            errors.update(err.errors)
        try:
            allowed_ips = read_allowed_ips(form.one("allowed_ips"))
            if allowed_ips != record.allowed_ips:
                changes["allowed_ips"] = allowed_ips
        except Invalid as err:
            errors.update(err.errors)
        if not errors and changes:
            try:
                yield KeyCall("update", (key_id,), changes)
            except KeyInputError as err:  # the key type's ceiling, say
                errors[field_of(err) or "name"] = sentence(str(err))
        if errors:
            return (yield from self.key_page(key_id, form, errors, 400))
        return Redirect(f"{self._key_url(key_id)}?saved={1 if changes else 0}")

    def rotate(self, key_id: str, form: Form) -> Flow:
        record: KeyRecord = yield KeyCall("get", (key_id,))
        if record.org != self.caller.org:
            raise KeyNotFound(key_id)
        shown = yield from self._already_rotated(key_id)
        if shown is not None:
            return shown
        yield from self._own(key_id)
        try:
            grace = read_grace(form.one("grace"))
        except Invalid as err:
            return (yield from self.key_page(key_id, form, err.errors, 400))
        try:
            new = yield KeyCall("rotate", (key_id,), {"grace": grace})
        except KeyConflict as err:
            # Another rotation of this key got there between the check above
            # and this one (the store decides, under the key's lock): the
            # same page as when it came first.
            shown = yield from self._already_rotated(key_id)
            if shown is None:  # and its successor has been revoked since
                raise Refused(409, "Key already rotated", str(err)) from None
            return shown
        return self.page(
            201,
            "shown.html",
            "Key rotated",
            key=self._view(new.record),
            secret=ShownOnce(new.secret),
            action="rotated",
            grace=None if grace is None else dict(GRACE_CHOICES)[grace],
        )

    def _already_rotated(self, key_id: str) -> Generator[Effect, Any, Page | None]:
        """The 409 page of a key with an active successor; ``None`` if it has none."""
        active: list[KeyRecord] = yield KeyCall("list", (self.caller.org,))
        successor = successors(active).get(key_id)
        if successor is None:
            return None
        # A reload of the rotate POST, or a second rotation: the new secret
        # was shown once; the page says where the new key is.
        return self.page(
            409,
            "shown.html",
            "Key already rotated",
            key=self._view(next(r for r in active if r.id == successor)),
            secret=None,
            action="rotated",
            grace=None,
        )

    def revoke_confirm(self, key_id: str) -> Flow:
        record = yield from self._own(key_id)
        return self.page(200, "revoke.html", f"Revoke {record.name}", key=self._view(record))

    def revoke(self, key_id: str) -> Flow:
        yield from self._own(key_id)
        yield KeyCall("revoke", (key_id,))
        return Redirect(f"{self.base}/?revoked={key_id}")

    # -- helpers -----------------------------------------------------------------------------

    def _find(self, key_id: str) -> Generator[Effect, Any, KeyRecord]:
        """The caller's org's active key ``key_id``; anything else is "not found"."""
        record: KeyRecord = yield KeyCall("get", (key_id,))
        # Another org's key answers as an unknown one: ids are not probeable
        # across tenants. Revoked and expired keys are gone too.
        if record.org != self.caller.org or not record.is_active(self.ks.now()):
            raise KeyNotFound(key_id)
        return record

    def _own(self, key_id: str) -> Generator[Effect, Any, KeyRecord]:
        """``_find``, and the caller may change it (SPEC 6's rule for members)."""
        record = yield from self._find(key_id)
        if not self.caller.may_change(record):
            raise Refused(
                403,
                "Not your key",
                "Only an admin, or the key's creator or owner, may change this key.",
            )
        return record

    def _key_url(self, key_id: str) -> str:
        return f"{self.base}/{key_id}"

    def _view(
        self,
        record: KeyRecord,
        requests: int | None = None,
        successor: str | None = None,
        now: Any = None,
    ) -> Any:
        return key_view(
            record,
            now=now or self.ks.now(),
            caller=self.caller,
            permissions=self.permissions,
            requests=requests if self.ks.counting else None,
            successor=successor,
        )
