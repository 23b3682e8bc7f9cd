"""Stopping a run on SIGTERM or SIGINT: it saves a checkpoint after the current step and
ends, and with several processes every process stops after the same step.

One process: the signal handlers set `Stop.signal`; the loop stops after the step during
which the signal came (`Stop.requested`).

Several processes (`jax.distributed` initialised, process count > 1): a per-process flag
would let the signalled process enter the collective checkpoint save while the others
run the next step's collectives, and both wait forever. JAX's preemption service
(`jax_enable_preemption_service`, on by default) solves exactly this: `jax.distributed`
installs its own SIGTERM handler, the signalled process tells the coordination service,
every process sends it the step it has reached, and
`multihost_utils.reached_preemption_sync_point(step)` is then true on every process at
the same step, one past the furthest. So SIGTERM is left to JAX's handler (a Python
handler would replace it), and SIGINT (Ctrl-C) is passed on to it as a SIGTERM of this
process. This costs a mutex per step and no collective, where agreeing by a
`multihost_utils.process_allgather` of every process's flag would add a blocking
collective and a host round trip to every step. The protocol needs every process to ask
at every step, from the same first step: `Stop.requested` is called once per step by
`loop.run_steps`, which all loops share (orbax's CheckpointManager asks too, at each
save, with the same step numbers, so the count stays consistent). It runs on the
coordination service, not on the devices, so it works on CPU processes as on GPU and TPU.
With the service turned off, several processes fall back to the per-process flag.
"""

from __future__ import annotations

import os
import signal
import threading

import jax
from jax.experimental import multihost_utils


class Stop:
    """A run's stop request. `signal`: the number of the signal that stops this process
    (SIGTERM on a process that another one's signal stopped), or None."""

    def __init__(self, agree: bool):
        self.signal = None
        self.agree = agree  # several processes: stop at the step JAX's preemption sync agrees on
        self._asked = None  # the last step asked (agree): JAX's protocol counts one call per step
        self._agreed = False

    def begin(self, step: int) -> None:
        """Tell JAX's protocol the step this process starts from, before the first step
        compiles: a notice that comes during that compile is then agreed to stop after the
        first step (the protocol takes the furthest step the processes reported; without a
        report it would pick step 1, which a resumed run never reaches again)."""
        if self.agree:
            self.requested(step)

    def requested(self, step: int) -> bool:
        """Whether the run stops after `step` (the steps done). Every process calls it
        after every step; asking again for the same step gives the same answer."""
        if not self.agree:
            return self.signal is not None
        if step != self._asked:
            self._asked = step
            if not self._agreed and multihost_utils.reached_preemption_sync_point(step):
                self._agreed = True
                self.signal = self.signal or signal.SIGTERM
        return self._agreed


def agrees_across_processes() -> bool:
    """True when this run's processes stop at an agreed step: several processes and JAX's
    preemption service on."""
    return jax.process_count() > 1 and bool(jax.config.jax_enable_preemption_service)


def catch_stop_signals():
    """(stop, restore): from now on SIGTERM/SIGINT only request a stop (a `Stop`; the
    loop then saves a checkpoint and ends); restore() reinstates the previous handlers.
    Shared by the training loop and the RL loop (llada_jax.rl.loop). Handlers are only
    installed from the main thread (Python's rule); JAX's SIGTERM handler works from any."""
    stop = Stop(agrees_across_processes())
    old_handlers = {}

    def on_signal(sig, _frame):
        stop.signal = sig
        if stop.agree:  # JAX's handler starts the protocol that agrees on the step
            os.kill(os.getpid(), signal.SIGTERM)

    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT,) if stop.agree else (signal.SIGTERM, signal.SIGINT):
            old_handlers[sig] = signal.signal(sig, on_signal)

    def restore():
        for sig, h in old_handlers.items():
            signal.signal(sig, h)

    return stop, restore
