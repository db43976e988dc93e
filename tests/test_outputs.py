"""The noise finder that `make course` and the student-copy run apply to executed notebooks."""

from __future__ import annotations

import nbformat

from sprc_lib.course.outputs import noise, visible_lines


def notebook(*streams: tuple[str, str]) -> nbformat.NotebookNode:
    cell = nbformat.v4.new_code_cell("pass")
    cell.outputs = [nbformat.v4.new_output("stream", name=name, text=text) for name, text in streams]
    return nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# t"), cell])


def test_a_carriage_return_rewrites_the_line_from_its_start():
    assert visible_lines("abcdef\rXY") == ["XYcdef"]
    assert visible_lines("epoch 1:  40%|####  | 4/10\r" + " " * 40 + "\r\ndone") == ["", "done"]


def test_a_bar_stopped_half_way_is_noise_and_a_finished_or_cleared_one_is_not():
    half = "epoch 1:  10%|█         | 7/69 [00:02<00:21]"
    done = "\rload: 100%|██████████| 10/10 [00:01<00:00]\n"
    cleared = f"\r{half}\r{' ' * 60}\r"
    assert noise(notebook(("stderr", "\r" + half))) == [f"cell 1: a progress bar left at 10%: {half}"]
    assert noise(notebook(("stderr", done), ("stderr", cleared), ("stdout", "recall 40%| of chance"))) == []


def test_a_loading_weights_bar_is_noise_even_when_finished():
    problems = noise(notebook(("stderr", "Loading weights: 100%|██████████| 95/95 [00:00<00:00]")))
    assert len(problems) == 1 and "transformers loading bar" in problems[0]


def test_stream_pieces_are_read_together():
    pieces = [("stderr", "\rtrain:  50%|#####     | 1/2"), ("stderr", "\rtrain: 100%|##########| 2/2\n")]
    assert noise(notebook(*pieces)) == []
