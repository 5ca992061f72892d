"""One writer per destination: the lease a ``convert`` holds on its DEST root while it runs.

The lease is the object ``DEST/.cellmap-migrate/lease.json``: who holds it (host, pid, start
time, command line, a run id) and when it was last renewed, with the holder's expiry. It is
per DEST root, not per image: a run also writes documents shared by its images (the
``labels`` groups, the root group) and ``--overwrite`` deletes across images, so only one
run may write a DEST at a time.

- **Taken** before the state check with a create-if-absent write; a lease that is held is
  refused (:class:`LeaseHeldError`, one line naming the holder) unless it is stale: not
  renewed for longer than its expiry, or held by a pid that is no longer running on this
  host. A stale lease (or any lease, with ``break_lease``) is taken over with a
  replace-if-unchanged write, so of two runs taking over the same lease only one wins.
- **Renewed** by a background thread (every ``expiry / 10`` seconds, at most 30 s), again
  with replace-if-unchanged: a run whose lease was taken over notices at its next renewal
  and :meth:`Lease.check` raises :class:`LeaseLostError` from then on.
- **Released** at the end (also on errors and Ctrl-C) with delete-if-unchanged; the state
  folder goes with it when nothing else is left in it, so a finished DEST holds only Zarr.

Conditional writes are the storage's (:meth:`migrate.storage.Store.create_if_absent` …):
atomic on local disks, ``If-None-Match``/``If-Match`` on S3. A server that cannot do them is
named in one line and the lease falls back to a best effort: write, wait, read back and
compare the run id (two runs starting within that moment may both go on).
"""

from __future__ import annotations

import contextlib
import datetime
import json
import math
import os
import shlex
import signal
import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass

from migrate.dest.records import STATE_DIR
from migrate.errors import MigrationError
from migrate.storage import ConditionalWritesUnsupportedError, Store, join_key

LEASE_KEY = join_key(STATE_DIR, "lease.json")
DEFAULT_EXPIRY = 300.0
"""Seconds a lease stays valid without renewal (``--lease-timeout``)."""
MAX_RENEW_INTERVAL = 30.0
CONFIRM_SECONDS = 1.0
"""A running copy reads its lease back at most this often (:meth:`Lease.check`), so a run
whose lease was broken stops within about a second, not only at its next renewal."""
BEST_EFFORT_SETTLE = 1.0
"""Without conditional writes: seconds between writing the lease and reading it back."""

Notice = Callable[[str], None]


class LeaseHeldError(MigrationError):
    """Another run holds the lease of DEST."""


class LeaseLostError(MigrationError):
    """This run's lease was taken over (or could not be renewed in time)."""


@dataclass(frozen=True)
class Holder:
    """The content of a lease: who holds it and until when."""

    run_id: str
    host: str
    pid: int
    started: str
    command: str
    renewed: float
    """Seconds since the epoch, on the holder's clock."""
    expiry_seconds: float

    def dumps(self) -> bytes:
        data = {**asdict(self), "renewed_at": _iso(self.renewed)}
        return (json.dumps(data, indent=2, sort_keys=True) + "\n").encode()

    @staticmethod
    def parse(raw: bytes) -> Holder | None:
        """The lease in ``raw``; None when it is not one. A ``renewed`` or ``expiry_seconds``
        that is not a number is kept as NaN, which :meth:`stale_reason` calls stale."""
        try:
            data = json.loads(raw)
            return Holder(
                run_id=str(data["run_id"]),
                host=str(data["host"]),
                pid=int(data["pid"]),
                started=str(data["started"]),
                command=str(data["command"]),
                renewed=_number(data.get("renewed")),
                expiry_seconds=_number(data.get("expiry_seconds")),
            )
        except (ValueError, TypeError, KeyError, AttributeError, OverflowError):
            return None

    def describe(self) -> str:
        return f"host {self.host}, pid {self.pid}, started {self.started}, command: {self.command}"

    def stale_reason(self, now: float) -> str | None:
        """Why this lease no longer protects a live run, or None while it does. A renewal
        time or expiry that is not a number, or a renewal further in the future than a whole
        expiry (no clock skew explains it), cannot protect anything: stale."""
        if not math.isfinite(self.renewed) or not math.isfinite(self.expiry_seconds):
            return "its renewal time or expiry is not a number"
        if self.renewed - now > max(self.expiry_seconds, 0.0):
            ahead = self.renewed - now
            return f"renewed {ahead:.0f} s in the future by this host's clock"
        age = now - self.renewed
        if age > self.expiry_seconds:
            return f"not renewed for {age:.0f} s, expiry {self.expiry_seconds:.0f} s"
        if self.host == socket.gethostname() and not pid_running(self.pid):
            return f"pid {self.pid} is no longer running on {self.host}"
        return None


def _number(value: object) -> float:
    """A JSON number as a float; NaN for anything else (a string, null, a boolean)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return math.nan
    return float(value)


def _iso(epoch: float) -> str:
    if not math.isfinite(epoch):
        return "never"
    try:
        moment = datetime.datetime.fromtimestamp(epoch, datetime.UTC)
    except (OverflowError, OSError, ValueError):
        return "never"
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


def pid_running(pid: int) -> bool:
    """True when a process ``pid`` runs on this host (a zombie, which has exited and waits
    for its parent to notice, does not)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().rsplit(b")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True  # no /proc here: it exists
    return state not in (b"Z", b"X")


def read_holder(dest: Store) -> tuple[Holder | None, str] | None:
    """The lease at DEST (None inside when it cannot be parsed) and its version token, or
    None when there is none. Uses a plain read where the storage has no version tokens."""
    try:
        found = dest.read_versioned(LEASE_KEY)
    except ConditionalWritesUnsupportedError:
        raw = dest.read(LEASE_KEY)
        found = None if raw is None else (raw, "")
    if found is None:
        return None
    return Holder.parse(found[0]), found[1]


def held_by_other(dest: Store) -> Holder | None:
    """The holder of a live lease at DEST (for the dry run to mention), else None."""
    return live_holder(read_holder(dest))


def live_holder(found: tuple[Holder | None, str] | None) -> Holder | None:
    """The holder of a lease as read (:func:`read_holder`) while it is live, else None."""
    if found is None or found[0] is None:
        return None
    holder = found[0]
    return holder if holder.stale_reason(time.time()) is None else None


def this_host() -> str:
    """The host name a lease records."""
    return socket.gethostname()


class Lease:
    """A held lease, renewed in the background until :meth:`release`."""

    def __init__(
        self,
        dest: Store,
        holder: Holder,
        token: str,
        *,
        conditional: bool,
        notice: Notice,
        broke: Holder | None = None,
    ) -> None:
        self.dest = dest
        self.holder = holder
        self.broke = broke
        """The holder whose live lease this run took (``--break-lease``), if it did."""
        self._token = token
        self._conditional = conditional
        self._notice = notice
        self._lost: str | None = None
        self._renewed_ok = self._confirmed = time.monotonic()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._renew_loop, name="lease", daemon=True)
        self._thread.start()

    @property
    def run_id(self) -> str:
        return self.holder.run_id

    def check(self) -> None:
        """Raise LeaseLostError once the lease is no longer this run's, as far as this
        process knows without asking the storage (cheap: called before every work unit): its
        renewal failed, or none succeeded for most of the expiry (the process was frozen, or
        the storage is out of reach), after which another run may take the lease."""
        now = time.monotonic()
        silent = now - self._renewed_ok
        if self._lost is None and silent > 0.8 * self.holder.expiry_seconds:
            self._lost = f"the lease was not renewed for {silent:.0f} s"
        if self._lost is None and now - self._confirmed > CONFIRM_SECONDS:
            self._confirmed = now  # at most one read a second, whatever the threads
            self._read_back()
        if self._lost is not None:
            raise LeaseLostError(
                f"{self.dest.display()}: {self._lost}; this run stopped before finalizing "
                "(every finished work unit is recorded)"
            )

    def confirm(self) -> None:
        """Read the lease from the storage and raise LeaseLostError unless it is still this
        run's: called before every finalize step (an image's metadata, the completion
        mark), so a run whose lease was taken never finalizes, whenever it learns of it."""
        self._read_back()
        self.check()

    def _read_back(self) -> None:
        """Read the lease; note it lost unless it is still this run's."""
        found = read_holder(self.dest)
        holder = found[0] if found is not None else None
        if self._lost is None and (holder is None or holder.run_id != self.run_id):
            self._lost = (
                f"lost the lease to another run ({holder.describe()})"
                if holder is not None
                else "the lease was removed by another run"
            )

    def _renew_loop(self) -> None:
        interval = min(MAX_RENEW_INTERVAL, self.holder.expiry_seconds / 10)
        last_ok = time.time()
        while not self._stop.wait(interval):
            try:
                self.renew()
                last_ok = time.time()
            except Exception as exc:  # storage trouble: try again, until the expiry nears
                if time.time() - last_ok > 0.8 * self.holder.expiry_seconds:
                    silent = time.time() - last_ok
                    self._lost = f"could not renew the lease for {silent:.0f} s ({exc})"
            if self._lost is not None:
                return

    def renew(self) -> None:
        """Write a fresh ``renewed`` time, if the lease is still this run's."""
        with self._lock:
            if self._lost is not None or self._stop.is_set():
                return
            fresh = Holder(**{**asdict(self.holder), "renewed": time.time()})
            if self._conditional:
                token = self.dest.replace_if_unchanged(LEASE_KEY, fresh.dumps(), self._token)
            else:
                found = read_holder(self.dest)
                mine = found is not None and found[0] is not None and found[0].run_id == self.run_id
                if mine:
                    self.dest.write(LEASE_KEY, fresh.dumps())
                token = "" if mine else None
            if token is None:
                found = read_holder(self.dest)
                other = found[0] if found is not None else None
                self._lost = (
                    f"lost the lease to another run ({other.describe()})"
                    if other is not None
                    else "the lease was removed by another run"
                )
                return
            self.holder, self._token = fresh, token
            self._renewed_ok = time.monotonic()

    def release(self) -> None:
        """Stop renewing and delete the lease if it is still this run's; then the state
        folder, when no resume record is left in it."""
        self._stop.set()
        self._thread.join()
        with self._lock:
            if self._lost is not None:
                return
            records = join_key(STATE_DIR, "images")
            listed = "images" in self.dest.list_dir(STATE_DIR)[0]  # S3: only with records
            if listed and next(iter(self.dest.list_keys(records)), None) is None:
                self.dest.delete_prefix(records)  # folders left empty (local disks)
            if self._conditional:
                self.dest.delete_if_unchanged(LEASE_KEY, self._token)
            else:
                found = read_holder(self.dest)
                if found is not None and found[0] is not None and found[0].run_id == self.run_id:
                    self.dest.delete_prefix(LEASE_KEY)
            self._lost = "the lease was released"


def _command() -> str:
    return shlex.join(["cellmap-migrate", *sys.argv[1:]])


def acquire(
    dest: Store,
    *,
    expiry: float = DEFAULT_EXPIRY,
    break_lease: bool = False,
    notice: Notice = print,
) -> Lease:
    """Take the lease of ``dest`` (see the module docstring); ``notice`` gets the one-line
    messages about takeovers and storage without conditional writes."""
    mine = Holder(
        run_id=uuid.uuid4().hex,
        host=socket.gethostname(),
        pid=os.getpid(),
        started=_iso(time.time()),
        command=_command(),
        renewed=time.time(),
        expiry_seconds=expiry,
    )
    try:
        return _acquire_conditional(dest, mine, break_lease, notice)
    except ConditionalWritesUnsupportedError as exc:
        notice(f"note: {exc}; the lease is a best effort (written, read back, compared)")
        return _acquire_best_effort(dest, mine, break_lease, notice)


def _refuse(dest: Store, holder: Holder | None) -> LeaseHeldError:
    if holder is None:
        return LeaseHeldError(
            f"{dest.display(LEASE_KEY)}: an unreadable lease is in the way; if no other run "
            "writes this DEST, run again with --break-lease"
        )
    left = max(0.0, holder.renewed + holder.expiry_seconds - time.time())
    return LeaseHeldError(
        f"{dest.display()} is being written by another run ({holder.describe()}); wait for "
        f"it to finish, or if it is gone, run again after its lease expires (in {left:.0f} s) "
        "or with --break-lease"
    )


def _takeover(dest: Store, holder: Holder | None, why: str, notice: Notice) -> None:
    who = holder.describe() if holder is not None else "an unreadable lease"
    notice(f"taking over the lease of {dest.display()} from {who} ({why})")


def _acquire_conditional(dest: Store, mine: Holder, break_lease: bool, notice: Notice) -> Lease:
    for _attempt in range(10):
        # read first: on a server that ignores If-None-Match, a blind create would replace
        # a live holder's lease before the probe below could tell
        found = dest.read_versioned(LEASE_KEY)
        if found is None:
            token = dest.create_if_absent(LEASE_KEY, mine.dumps())
            if token is None:
                continue  # another run was quicker: look at its lease
            if dest.create_if_absent(LEASE_KEY, mine.dumps()) is not None:
                # the same bytes again, so harmless: the server ignored If-None-Match
                raise ConditionalWritesUnsupportedError(
                    f"{dest.display(LEASE_KEY)}: the storage ignores conditional writes"
                )
            return Lease(dest, mine, token, conditional=True, notice=notice)
        raw, token = found
        holder = Holder.parse(raw)
        if holder is not None and holder.run_id == mine.run_id:  # our own retried create
            return Lease(dest, mine, token, conditional=True, notice=notice)
        why = "--break-lease" if break_lease else None
        if why is None and holder is not None:
            why = holder.stale_reason(time.time())
        if why is None:
            raise _refuse(dest, holder)
        new = dest.replace_if_unchanged(LEASE_KEY, mine.dumps(), token)
        if new is None:
            continue  # changed meanwhile (renewed, or taken over by a third run): again
        _takeover(dest, holder, why, notice)
        if dest.replace_if_unchanged(LEASE_KEY, mine.dumps(), '"not-a-version"') is not None:
            # the same bytes again under a token that cannot match: If-Match was ignored
            raise ConditionalWritesUnsupportedError(
                f"{dest.display(LEASE_KEY)}: the storage ignores conditional writes"
            )
        return Lease(dest, mine, new, conditional=True, notice=notice, broke=_live(holder))
    raise LeaseHeldError(f"{dest.display(LEASE_KEY)}: the lease keeps changing; try again")


def _acquire_best_effort(dest: Store, mine: Holder, break_lease: bool, notice: Notice) -> Lease:
    found = read_holder(dest)
    if found is not None and (found[0] is None or found[0].run_id != mine.run_id):
        holder = found[0]
        why = "--break-lease" if break_lease else None
        if why is None and holder is not None:
            why = holder.stale_reason(time.time())
        if why is None:
            raise _refuse(dest, holder)
        _takeover(dest, holder, why, notice)
    broke = _live(found[0]) if found is not None else None
    dest.write(LEASE_KEY, mine.dumps())
    time.sleep(BEST_EFFORT_SETTLE)
    back = read_holder(dest)
    winner = back[0] if back is not None else None
    if winner is None or winner.run_id != mine.run_id:
        raise _refuse(dest, winner)
    return Lease(dest, mine, "", conditional=False, notice=notice, broke=broke)


def _live(holder: Holder | None) -> Holder | None:
    """``holder`` when its lease was not stale (only ``--break-lease`` takes such a lease)."""
    return holder if holder is not None and holder.stale_reason(time.time()) is None else None


POLL_SECONDS = 0.2
WAIT_MARGIN = 60.0
"""Seconds, beyond its lease's expiry, that a broken holder on this host is given to stop
(it notices at its next renewal, then ends the work unit it is copying)."""


def wait_for_broken_holder(lease: Lease, notice: Notice) -> None:
    """After ``--break-lease`` took a live lease: wait until its holder has stopped, so that
    none of its writes can land after this run's. A holder on this host is watched by its
    pid (it reads its lease back every second while it copies, and stops before the next
    work unit or any finalize step): this returns once the pid is gone, and raises
    LeaseHeldError when it still runs a minute after its lease's expiry (a frozen process:
    stop it). A holder on another host cannot be watched; ``--break-lease`` promises it is
    gone, and its records are not counted (the engine starts its images again)."""
    broke = lease.broke
    if broke is None or broke.host != socket.gethostname() or not pid_running(broke.pid):
        return
    patience = broke.expiry_seconds + WAIT_MARGIN
    notice(
        f"waiting for pid {broke.pid}, whose lease was broken, to stop (it stops at its next "
        f"lease renewal; at most {patience:.0f} s)"
    )
    deadline = time.monotonic() + patience
    while pid_running(broke.pid):
        lease.check()
        if time.monotonic() > deadline:
            raise LeaseHeldError(
                f"{lease.dest.display()}: pid {broke.pid} on this host, whose lease was broken "
                f"({broke.describe()}), still runs after {patience:.0f} s; stop it "
                f"(kill {broke.pid}), then run again"
            )
        time.sleep(POLL_SECONDS)


def _deferring_interrupts(call: Callable[[], None]) -> None:
    """``call()``, with a Ctrl-C (SIGINT) that arrives meanwhile delivered only after it
    returns, to the handler that was in place (the CLI's decides what it means: after a
    finished run it is only noted): releasing the lease is a few requests, and an
    interrupted release would leave DEST locked until the lease expires. Off the main
    thread, just ``call()``."""
    if threading.current_thread() is not threading.main_thread():
        call()
        return
    caught: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda number, _frame: caught.append(number))
    try:
        call()
    finally:
        signal.signal(signal.SIGINT, previous)
    if caught:
        signal.raise_signal(signal.SIGINT)


@contextlib.contextmanager
def hold(
    dest: Store,
    *,
    expiry: float = DEFAULT_EXPIRY,
    break_lease: bool = False,
    notice: Notice = print,
) -> Iterator[Lease]:
    """The lease of ``dest``, held for the ``with`` block and released after it (also when
    it raises or is interrupted). A release that fails (storage gone) does not hide what
    happened in the block: it is noted, and the lease is left to expire (or, on this host,
    to be taken over as the lease of a finished pid)."""
    lease = acquire(dest, expiry=expiry, break_lease=break_lease, notice=notice)
    try:
        wait_for_broken_holder(lease, notice)
        yield lease
    finally:
        try:
            _deferring_interrupts(lease.release)
        except MigrationError as exc:
            notice(
                f"note: could not release the lease {dest.display(LEASE_KEY)} ({exc}); "
                f"it expires {expiry:.0f} s after its last renewal"
            )
