"""Synthetic tasks: rows, prompt masks, scoring and resumable iteration."""

import numpy as np
import pytest

from llada_jax.data import tasks


def test_sort_rows_hold_the_sorted_prompt_then_eos():
    task = tasks.make_task("sort", n_items=4, n_values=10, vocab_size=16, seq_len=12)
    ids, prompt_mask = task.rows(np.random.default_rng(0), 3)
    assert ids.shape == (3, 12) and ids.dtype == np.int32
    for row in ids:
        assert row[4] == task.sep == 10
        assert row[5:9].tolist() == sorted(row[:4].tolist())
        assert (row[9:] == 14).all()  # EOS = vocab - 2
    assert prompt_mask[0].tolist() == [True] * 5 + [False] * 7
    assert task.score(ids, ids) == (1.0, 1.0)
    broken = ids.copy()
    broken[0, 6] += 1
    assert task.score(ids, broken) == (2 / 3, 1 - 1 / 21)


def test_cumsum_rows_hold_the_running_sums_mod_n_values_then_eos():
    task = tasks.make_task("cumsum", n_items=4, n_values=10, vocab_size=16, seq_len=12)
    ids = task.rows(np.random.default_rng(0), 3)[0]
    ids[0, :4] = [7, 5, 9, 0]  # by hand: 7, 12, 21, 21 -> 7, 2, 1, 1
    assert task.rows(np.random.default_rng(0), 3)[0][1:].tolist() == ids[1:].tolist()
    for row in ids[1:]:
        assert row[4] == 10 and (row[9:] == 14).all()
        assert row[5:9].tolist() == [sum(row[:i + 1]) % 10 for i in range(4)]
    assert task.answer(np.array([[7, 5, 9, 0]])).tolist() == [[7, 2, 1, 1]]


def test_cummax_rows_hold_the_running_maximum_then_eos():
    task = tasks.make_task("cummax", n_items=5, n_values=10, vocab_size=16, seq_len=14)
    ids, prompt_mask = task.rows(np.random.default_rng(2), 4)
    for row in ids:
        assert row[5] == 10 and (row[11:] == 14).all()
        assert row[6:11].tolist() == [max(row[:i + 1]) for i in range(5)]
    assert task.answer(np.array([[3, 1, 4, 1, 5]])).tolist() == [[3, 3, 4, 4, 5]]
    assert prompt_mask[0].tolist() == [True] * 6 + [False] * 8


def test_arith_rows_are_arithmetic_sequences():
    task = tasks.make_task("arith", n_items=0, n_values=7, vocab_size=16, seq_len=8)
    ids, prompt_mask = task.rows(np.random.default_rng(1), 4)
    steps = (ids[:, 1:] - ids[:, :-1]) % 7
    assert (steps == steps[:, :1]).all() and set(steps[:, 0]) <= {1, 2, 3}
    assert prompt_mask.sum(1).tolist() == [2] * 4


def test_iterator_is_resumable_and_sharded_by_process():
    task = tasks.make_task("sort", n_items=3, n_values=5, vocab_size=8, seq_len=8)
    it = tasks.TaskIterator(task, batch_size=4, seed=3, sft=True)
    next(it)
    state = it.get_state()
    want = [next(it) for _ in range(2)]
    again = tasks.TaskIterator(task, batch_size=4, seed=3, sft=True)
    again.set_state(state)
    for w in want:
        np.testing.assert_array_equal(next(again)["input_ids"], w["input_ids"])
    halves = [tasks.TaskIterator(task, batch_size=2, seed=3, process_index=i, process_count=2) for i in (0, 1)]
    whole = next(tasks.TaskIterator(task, batch_size=4, seed=3))
    assert set(whole) == {"input_ids"}
    np.testing.assert_array_equal(np.concatenate([next(h)["input_ids"] for h in halves]), whole["input_ids"])


@pytest.mark.parametrize("kw,match", [
    (dict(name="sorting"), "task='sorting'"),
    (dict(name="sort", n_values=20, vocab_size=16), "vocab_size=16"),
    (dict(name="sort", seq_len=6), "seq_len=6"),
])
def test_bad_task_settings_name_the_value(kw, match):
    args = dict(n_items=4, n_values=10, vocab_size=16, seq_len=12)
    args.update(kw)
    with pytest.raises(ValueError, match=match):
        tasks.make_task(args.pop("name"), **args)
