"""Stopping a run on SIGTERM/SIGINT at a step every process agrees on, so the forced
checkpoint save (a collective in a multi-process run) is entered by all of them.

One process: our handlers set the signal, and the loop stops after the step it is in.
Several processes (`jax.distributed.initialize`): JAX's preemption service catches
SIGTERM in any process and the coordination service tells the others;
`multihost_utils.reached_preemption_sync_point(step)` is then True on every process at
the same step (the largest step any process had reached, plus one), where they all save
and stop. SIGINT (a user's Ctrl-C) stays per process.
"""

from __future__ import annotations

import signal
import threading

import jax
from jax.experimental import multihost_utils


class Stop:
    """stop(step) -> the signal number that ends the run after `step`, or None."""

    def __init__(self, agreed: bool):
        self.agreed, self.signal = agreed, None

    def __call__(self, step: int) -> int | None:
        if self.agreed and multihost_utils.reached_preemption_sync_point(step):
            return int(signal.SIGTERM)
        return self.signal


def catch_stop_signals():
    """(stop, restore): from now on SIGTERM/SIGINT end the run after a step (`Stop`);
    restore() reinstates the previous handlers. The training and RL loops call it."""
    agreed = jax.process_count() > 1
    stop, old_handlers = Stop(agreed), {}
    # several processes: SIGTERM is the preemption service's (a handler here would replace it)
    catch = (signal.SIGINT,) if agreed else (signal.SIGTERM, signal.SIGINT)
    if threading.current_thread() is threading.main_thread():
        for sig in catch:
            old_handlers[sig] = signal.signal(sig, lambda s, _f: setattr(stop, "signal", int(s)))

    def restore():
        for sig, h in old_handlers.items():
            signal.signal(sig, h)

    return stop, restore
