"""SIGINT (Ctrl-C) and SIGTERM (a batch scheduler's time limit or cancel) while a command runs.

Until the run is finishing, either signal stops it: SIGTERM raises :class:`Terminated` in
the main thread as Ctrl-C raises KeyboardInterrupt, the units in flight are abandoned and
every finished unit stays recorded. From just before the completion mark is written
(:func:`finishing`), the first signal is held: the mark is written, the last steps run
(releasing the lease, printing the summary), and the command says the run had finished
and exits 0 — there is nothing left to stop or resume. A second signal stops it as before.
In the program's own process (:func:`own_process`) a signal that arrives while the process
exits after a finished run says the same, instead of killing it without a word.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator
from types import FrameType
from typing import Any

SIGNAL_NAMES = {signal.SIGINT: "SIGINT (Ctrl-C)", signal.SIGTERM: "SIGTERM"}
HANDLED = (signal.SIGINT, signal.SIGTERM)


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread like Ctrl-C's KeyboardInterrupt, so that a run
    stops the same way: work in flight is cancelled, every finished unit stays recorded."""


class _State:
    own_process = False
    """True in the ``cellmap-migrate`` program (not when the CLI is called in-process)."""
    finishing = False
    """The completion mark is being (or has been) written."""
    held: str | None = None
    """The signal that arrived while finishing, when one did."""


_state = _State()


def late_note(name: str) -> str:
    """What the command says when ``name`` arrived after the run had finished."""
    return (
        f"note: {name} arrived after the run had finished: every image is complete at DEST "
        "(its completion mark is written); nothing to resume"
    )


def own_process() -> None:
    """Called by the program's entry point: handlers may outlive the command (see
    :func:`handled`), as nothing else runs in this process."""
    _state.own_process = True


def finishing() -> None:
    """The completion mark is about to be written: from now on, the first signal is held."""
    _state.finishing = True


def held_signal() -> str | None:
    """The signal held since :func:`finishing`, or None."""
    return _state.held


@contextlib.contextmanager
def handled() -> Iterator[None]:
    """While the command runs: SIGTERM raises :class:`Terminated` and SIGINT
    KeyboardInterrupt, except the first one after :func:`finishing`, which is held
    (:func:`held_signal`). Only the main thread can install handlers; elsewhere nothing
    changes.

    Afterwards the previous handlers are back, except in the program's own process after a
    finished run: there a signal that arrives while the process exits (threads joined,
    buffers flushed) prints the note and leaves the exit status 0."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _state.finishing = False
    _state.held = None

    def handle(signum: int, frame: FrameType | None) -> None:
        if _state.finishing and _state.held is None:
            _state.held = SIGNAL_NAMES[signal.Signals(signum)]
            return
        if signum == signal.SIGTERM:
            signal.signal(signum, signal.SIG_IGN)  # a repeated SIGTERM: not during shutdown
            raise Terminated
        raise KeyboardInterrupt

    previous: dict[int, Any] = {number: signal.signal(number, handle) for number in HANDLED}
    finished = False
    try:
        yield
        finished = _state.finishing
    finally:
        for number, handler in previous.items():
            keep = _state.own_process and finished
            signal.signal(number, _note_while_exiting if keep else handler)


def _note_while_exiting(signum: int, frame: FrameType | None) -> None:
    signal.signal(signum, signal.SIG_IGN)
    with contextlib.suppress(OSError):
        os.write(2, (late_note(SIGNAL_NAMES[signal.Signals(signum)]) + "\n").encode())
