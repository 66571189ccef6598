"""Fault injection for the tests: freeze or kill the worker at a named instant.

`JSON_ENGINE_FAULT=<point>:<stop|kill>[:<n>]` acts the n-th time (default 1) the worker
passes `<point>`: `before_write` (lines waiting, nothing written), `after_write` (written and
fsynced, in the commit thread, not committed), `after_commit` (committed, files not yet
finished) — these three count only checkpoints that have lines to write —, `after_publish`
(files finished after a commit, on S3 their background publication done, while the committed
metadata still names them), `after_claim` (partitions' epochs claimed, their files not yet
recovered) or `idle_handover` (a checkpoint with records and no moved offset, as an idle
input's hand-over, before its transaction). `stop` sends the process SIGSTOP, as a long GC
pause or a frozen VM would; `kill` sends SIGKILL. Unset: a no-op.

`JSON_ENGINE_FAULT=recover_while_reading:fail[:<n>]` makes the n-th recovery after the
worker was first ready (others' partitions are being read) fail, as when a broker goes away.
`JSON_ENGINE_FAULT=commit_in_flight:fail[:<n>]` makes the n-th checkpoint committed in the
background fail half a second later, uncommitted, while the loop reads on.

`JSON_ENGINE_FAULT=after_seek:skip:<n>` makes every seek of a recovery land n records past
the committed offset, as librdkafka's fetch sometimes resumes (its issues #2190, #4686).
"""

from __future__ import annotations

import os
import signal

_spec = os.environ.get("JSON_ENGINE_FAULT", "")
_point, _, _rest = _spec.partition(":")
_action, _, _count = _rest.partition(":")
_remaining = int(_count or 1)


def fault_point(name: str) -> None:
    if _count_down(name, ("kill", "stop")):
        os.kill(os.getpid(), signal.SIGKILL if _action == "kill" else signal.SIGSTOP)


def fault_fails(name: str) -> bool:
    """True the n-th time a `fail` fault's point is passed: the caller fails there."""
    return _count_down(name, ("fail",))


def _count_down(name: str, actions: tuple[str, ...]) -> bool:
    global _remaining
    if name != _point or _action not in actions or _remaining <= 0:
        return False
    _remaining -= 1
    return _remaining == 0


def fault_skip(name: str) -> int:
    """How many records a `skip` fault at `name` moves a seek forward (0 when unset)."""
    return _remaining if name == _point and _action == "skip" else 0
