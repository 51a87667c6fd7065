"""Waiting for the vault's worker threads whatever interrupts the wait. Private.

A stage thread of seal or open that is still running after its caller gave up on it keeps
doing its work: open's writer went on writing plaintext into the output's descriptor after
atomic_output had closed it, that is into whatever file the process opened next under the
same number (3 MiB of plaintext landed in an unrelated file that way), and seal's writers
went on storing blocks outside the import gate, where a gc had just run. So a caller that
stops its threads waits until they have stopped, even through a KeyboardInterrupt (or an
exception a signal handler raises), and raises that interrupt only afterwards.

Thread.join() is not what is waited on: interrupted, Python 3.11 marks a thread stopped
that is still running (bpo-45274), and the next join() returns at once. Each thread sets
an Event as its last step instead.

Pure Python cannot make this airtight: a second interruption can land at an instruction
outside any `try` (at the entry of the caller's cleanup, or at a loop's jump back). The
stages are built unstarted and started inside the `try` whose cleanup aborts them, so the
first one cannot leave threads the caller does not know of.
So what would be harmful is also prevented where it happens: open's writer writes into a
descriptor of its own (_Output dups it), never into a number the caller closes and the
process reuses. A thread abandoned that way finishes what was queued for it (into the
unnamed temp file no one installs, or blocks no pin reaches, which the next gc removes)
and then waits for an end marker that never comes, holding its descriptor (and that
file's disk space) and its buffers until the process exits.
"""
from __future__ import annotations

from collections.abc import Callable


def wait_out(wait: Callable[[], object]) -> BaseException | None:
    """Call `wait()` (which must be safe to call again after an interruption) until it
    returns; the first interruption, or None, for the caller to raise once all is stopped."""
    first: BaseException | None = None
    while True:
        try:
            wait()
            return first
        except BaseException as exc:  # noqa: BLE001 - raised by the caller, afterwards
            first = first or exc


def stop_all(*steps: Callable[[], BaseException | None]) -> None:
    """Run every step (each waits out its threads and returns the interruption it got; an
    interruption before its own wait began, at its first instruction, is caught here and
    the step run again), then raise the first interruption, if any."""
    first: BaseException | None = None
    todo = list(steps)
    while todo:
        try:
            got = todo[0]()
            del todo[0]  # only once it has returned
        except BaseException as exc:  # noqa: BLE001 - raised below, once every step is done
            got = exc
        first = first or got
    if first is not None:
        raise first
