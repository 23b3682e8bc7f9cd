"""Reward functions for RL, by name (`config.rl.rewards`, comma-separated; summed).

A reward is a plain Python/numpy (or JAX) function
`reward(prompts_NxP, completions_NxA, task) -> (N,) float` of int token ids; `task` is
the checkable task of `llada_jax.tasks` the prompts came from (None for other data).
Add one with `@register("name")`.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from llada_jax.data.tasks import ArithmeticTask, SortTask

REWARDS: dict[str, Callable] = {}


def register(name: str):
    def deco(fn):
        REWARDS[name] = fn
        return fn

    return deco


def expected_answer(task, prompts_NxP, answer_len: int):
    """The one correct answer of each prompt of a checkable task, (N, answer_len) int."""
    prompts = np.asarray(prompts_NxP)
    n = prompts.shape[0]
    if isinstance(task, SortTask):  # and its subclasses (cumsum, cummax): the task's own answer()
        out = np.full((n, answer_len), task.eos, np.int64)
        out[:, :task.n_items] = task.answer(prompts[:, :task.n_items])[:, :answer_len]
        return out
    if isinstance(task, ArithmeticTask):  # start + stride * position (mod n_values)
        start = prompts[:, :1]
        stride = (prompts[:, 1:2] - prompts[:, :1]) % task.n_values
        pos = np.arange(prompts.shape[1], prompts.shape[1] + answer_len)
        return (start + stride * pos) % task.n_values
    raise ValueError(f"expected_answer: task {type(task).__name__} has no checkable answer "
                     f"(expected a SortTask or an ArithmeticTask)")


def _exact(kind):
    def reward(prompts, completions, task):
        if not isinstance(task, kind):
            raise ValueError(f"reward {kind.__name__}: the data's task is {type(task).__name__}")
        completions = np.asarray(completions)
        want = expected_answer(task, prompts, completions.shape[1])
        return np.all(completions == want, axis=1).astype(np.float32)

    return reward


register("sort_exact")(_exact(SortTask))
register("arith_exact")(_exact(ArithmeticTask))


@register("sort_format")
def sort_format(prompts, completions, task):
    """A format reward (an example of a shaped one): 0.1 when the answer is n_items
    values followed only by EOS, whatever their order; 0 otherwise."""
    c = np.asarray(completions)
    values_ok = np.all(c[:, :task.n_items] < task.n_values, axis=1)
    pad_ok = np.all(c[:, task.n_items:] == task.eos, axis=1)
    return 0.1 * (values_ok & pad_ok).astype(np.float32)


def parse(names: str) -> tuple[str, ...]:
    """'a,b' -> ('a', 'b'), each checked against the registry (ValueError)."""
    out = tuple(n.strip() for n in names.split(",") if n.strip())
    bad = [n for n in out if n not in REWARDS]
    if not out or bad:
        raise ValueError(f"rewards={names!r}: expected comma-separated names from {sorted(REWARDS)}")
    return out


def total_reward(names, prompts, completions, task):
    """The sum of the named rewards, float32 (N,)."""
    return sum(np.asarray(REWARDS[n](prompts, completions, task), np.float32) for n in names)
