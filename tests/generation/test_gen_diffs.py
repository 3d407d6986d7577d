"""SEARCH/REPLACE edits: applied in order, or refused with a specific reason."""

from __future__ import annotations

import pytest

from generation.diffs import DiffError, apply_search_replace, has_edit_blocks

PARENT = "A = 1\nB = 2\n\ndef f(x):\n    return x + A\n\ndef g(x):\n    return x + A\n"


def block(search: str, replace: str) -> str:
    return f"<<<<<<< SEARCH\n{search}=======\n{replace}>>>>>>> REPLACE\n"


def test_blocks_apply_in_order_each_to_the_result_of_the_previous():
    reply = "Two edits:\n" + block("A = 1\n", "A = 10\n") + "and\n" + block("A = 10\nB = 2\n", "A = 10\nB = 20\n")
    assert apply_search_replace(PARENT, reply).startswith("A = 10\nB = 20\n")


def test_blocks_inside_a_code_fence_apply():
    reply = "```python\n" + block("B = 2\n", "B = 3\n") + "```\n"
    assert "B = 3" in apply_search_replace(PARENT, reply)


def test_trailing_whitespace_differences_still_match():
    assert "B = 5" in apply_search_replace(PARENT, block("B = 2   \n", "B = 5\n"))


def test_a_reply_without_blocks_is_refused():
    with pytest.raises(DiffError, match="no SEARCH/REPLACE blocks"):
        apply_search_replace(PARENT, "just prose")
    assert not has_edit_blocks("just prose")


def test_search_text_not_in_the_parent_names_the_block_and_its_first_line():
    reply = block("A = 1\n", "A = 2\n") + block("C = 3\n", "C = 4\n")
    with pytest.raises(DiffError) as err:
        apply_search_replace(PARENT, reply)
    assert err.value.block == 2
    assert "block 2" in err.value.reason and "`C = 3`" in err.value.reason and "not found" in err.value.reason


def test_search_text_found_twice_is_ambiguous():
    with pytest.raises(DiffError, match="occurs 2 times"):
        apply_search_replace(PARENT, block("    return x + A\n", "    return x - A\n"))


def test_an_unclosed_block_is_refused():
    with pytest.raises(DiffError, match="not closed"):
        apply_search_replace(PARENT, "<<<<<<< SEARCH\nA = 1\n=======\nA = 2\n")


def test_an_empty_search_is_refused():
    with pytest.raises(DiffError, match="empty SEARCH"):
        apply_search_replace(PARENT, block("", "Z = 0\n"))


def test_edits_that_change_nothing_are_refused():
    with pytest.raises(DiffError, match="unchanged"):
        apply_search_replace(PARENT, block("A = 1\n", "A = 1\n"))
