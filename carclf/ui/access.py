"""Who may change things on a public server: the owner, known by a password from st.secrets.

In local mode everyone is the owner (it is their workstation). In public mode, launching, stopping,
resuming and deleting runs, deleting datasets and uploading or deleting bundles need the owner password
(`CARCLF_OWNER_PASSWORD` in st.secrets, or the environment). The password is compared in constant time and
wrong guesses are throttled per session and across the whole server (a new tab must not reset the count).

The server-wide count is a lock-out as well as a brake: someone who keeps guessing wrong keeps the login
locked for everyone, the owner too (up to GLOBAL_MAX_WAIT_S at a time). That is the price of not letting
them guess faster; Streamlit tells the app nothing reliable about who a visitor is (behind Community Cloud's
proxy every visitor may share one address). Restarting the app (Cloud: *Reboot app*) clears the count.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import threading
import time
from dataclasses import dataclass, field

import streamlit as st

from carclf.ui import settings

PASSWORD_ENV = "CARCLF_OWNER_PASSWORD"  # the owner password (st.secrets or environment)
# session_state key: digest of the password the session logged in with (a changed password logs it out).
OWNER_KEY = "carclf_owner"
# session_state key of this session's throttle.
THROTTLE_KEY = "carclf_login_throttle"
# Wrong passwords allowed before a wait; the wait then doubles with every further one, up to the cap.
SESSION_FREE_FAILURES = 3
SESSION_FIRST_WAIT_S = 30
SESSION_MAX_WAIT_S = 600
# The whole server (every session together) tolerates more, then locks logins the same way.
GLOBAL_FREE_FAILURES = 20
GLOBAL_FIRST_WAIT_S = 60
GLOBAL_MAX_WAIT_S = 900


@dataclass
class Throttle:
    """Counts wrong passwords; after ``free`` of them each further one imposes a doubling wait."""

    free: int
    first_wait_s: float
    max_wait_s: float
    failures: int = 0
    locked_until: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def wait_s(self, now: float | None = None) -> int:
        """Whole seconds left before another try is allowed (0 = allowed now)."""
        now = time.monotonic() if now is None else now
        return max(0, math.ceil(self.locked_until - now))

    def fail(self, now: float | None = None) -> int:
        """Record a wrong password; returns the wait it imposes (0 while still within the free tries)."""
        now = time.monotonic() if now is None else now
        with self.lock:
            self.failures += 1
            extra = self.failures - self.free
            if extra > 0:
                wait = min(self.max_wait_s, self.first_wait_s * 2 ** (extra - 1))
                self.locked_until = max(self.locked_until, now + wait)
        return self.wait_s(now)

    def succeed(self) -> None:
        with self.lock:
            self.failures = 0
            self.locked_until = 0.0


# One throttle per server process, shared by every session. A module global, not st.cache_resource: any
# visitor can make Streamlit clear its caches (a "clear_cache" websocket message), which reset the count.
_GLOBAL_THROTTLE = Throttle(GLOBAL_FREE_FAILURES, GLOBAL_FIRST_WAIT_S, GLOBAL_MAX_WAIT_S)


def _global_throttle() -> Throttle:
    return _GLOBAL_THROTTLE


def refuse_visitor_cache_clears() -> None:
    """In public mode, ignore the "clear cache" message a browser can send (Streamlit's menu item, hidden
    from visitors by ``toolbarMode = "viewer"`` but still accepted from any websocket client). It clears every
    st.cache_resource and st.cache_data of the server for everyone: a visitor could make the server reload
    its models over and over. Streamlit has no setting for this, so its handler is wrapped (once per process).
    """
    from streamlit.runtime.app_session import AppSession

    handler = getattr(AppSession, "_handle_clear_cache_request", None)
    if handler is None or getattr(handler, "carclf_guarded", False):
        return

    def guarded(session) -> None:
        if not settings.is_public():
            handler(session)

    guarded.carclf_guarded = True
    AppSession._handle_clear_cache_request = guarded


def _session_throttle() -> Throttle:
    if THROTTLE_KEY not in st.session_state:
        st.session_state[THROTTLE_KEY] = Throttle(SESSION_FREE_FAILURES, SESSION_FIRST_WAIT_S, SESSION_MAX_WAIT_S)
    return st.session_state[THROTTLE_KEY]


def _password() -> str:
    return str(settings.setting(PASSWORD_ENV, "") or "")


def _digest(password: str) -> str:
    return hashlib.sha256(password.encode("utf-8")).hexdigest()


def owner_password_configured() -> bool:
    """True when an owner password is set (st.secrets or environment)."""
    return bool(_password())


def is_owner() -> bool:
    """True when this session logged in with the current owner password."""
    password = _password()
    remembered = st.session_state.get(OWNER_KEY)
    return bool(password) and isinstance(remembered, str) and hmac.compare_digest(remembered, _digest(password))


def can_manage() -> bool:
    """May this session launch, stop, resume or delete? Local mode: always; public mode: the logged-in owner."""
    return not settings.is_public() or is_owner()


def manage_blocked_reason() -> str:
    """One line saying why management actions are off ('' when they are on)."""
    if can_manage():
        return ""
    if not owner_password_configured():
        return (f"This public app has no owner password ({PASSWORD_ENV} in the app's secrets), so launching, "
                "stopping and deleting are off.")
    return "Only the owner can launch, stop or delete here: log in as the owner in the sidebar."


def try_login(password: str) -> str:
    """Check a password; '' on success (the session becomes the owner), else the one-line refusal."""
    expected = _password()
    if not expected:
        return f"No owner password is configured ({PASSWORD_ENV})."
    session, server = _session_throttle(), _global_throttle()
    wait = max(session.wait_s(), server.wait_s())
    if wait:
        return f"Too many wrong passwords; try again in {wait} s."
    if hmac.compare_digest(password.encode("utf-8"), expected.encode("utf-8")):
        session.succeed()
        st.session_state[OWNER_KEY] = _digest(expected)
        return ""
    wait = max(session.fail(), server.fail())
    return f"Wrong password; try again in {wait} s." if wait else "Wrong password."


def logout() -> None:
    """Forget this session's owner login."""
    st.session_state.pop(OWNER_KEY, None)


def owner_login_ui() -> None:
    """Sidebar: owner login / logout in public mode (nothing in local mode)."""
    if not settings.is_public():
        return
    if is_owner():
        cols = st.sidebar.columns([2, 1])
        cols[0].caption(":material/key: Logged in as the owner.")
        cols[1].button("Log out", key="owner_logout", on_click=logout)
        return
    if not owner_password_configured():
        st.sidebar.caption(":material/lock: " + manage_blocked_reason())
        return
    with st.sidebar.expander("Owner login", icon=":material/key:"):
        with st.form("owner_login_form", border=False, clear_on_submit=True):
            password = st.text_input("Owner password", type="password", key="owner_password")
            submitted = st.form_submit_button("Log in")
        if submitted:
            refusal = try_login(password)
            if refusal:
                st.error(refusal, icon=":material/error:")
            else:
                st.rerun()
