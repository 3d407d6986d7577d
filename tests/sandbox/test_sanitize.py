"""The sanitizer: from an LLM reply to a clean candidate module, or a specific reason."""

from __future__ import annotations

import pytest

from evaluation.reference import REFERENCE_CANDIDATES
from sandbox.sanitize import sanitize

GOOD = '''import zlib

import numpy as np


def compress_video_frame(frame, frame_index, config):
    return zlib.compress(frame.tobytes())


def decompress_video_frame(compressed_data, frame_index, config):
    raw = zlib.decompress(compressed_data)
    return np.frombuffer(raw, np.uint8).reshape(config["height"], config["width"], 3)
'''


def _with(body: str) -> str:
    return GOOD + "\n" + body + "\n"


def test_plain_code_passes_unchanged():
    result = sanitize(GOOD)
    assert result.ok and result.reason is None
    assert result.code == GOOD
    assert result.removed == []
    assert len(result.ast_hash) == 64


def test_code_is_taken_from_the_fenced_block_that_defines_both_functions():
    reply = f"Here is a helper:\n```python\ndef helper():\n    return 1\n```\nAnd the codec:\n```python\n{GOOD}```\nEnjoy."
    result = sanitize(reply)
    assert result.ok
    assert result.code == GOOD


def test_raw_reply_without_fence_is_used_as_code():
    assert sanitize(GOOD).ok


@pytest.mark.parametrize(
    "guard",
    [
        'if __name__ == "__main__":',
        "if __name__ == '__main__':",
        'if "__main__" == __name__:',
        'if (__name__ == "__main__"):',
        'if __name__ in ("__main__",):',
    ],
)
def test_main_blocks_are_stripped_in_any_spelling(guard):
    result = sanitize(_with(f"{guard}\n    compress_video_frame(None, 0, {{}})\n    print('done')"))
    assert result.ok
    assert "__main__" not in result.code
    assert len(result.removed) == 1
    assert result.removed[0].startswith("line 14: removed the `if ")


def test_top_level_calls_and_loops_are_dropped_but_definitions_kept():
    result = sanitize(_with("TABLE = [i * i for i in range(8)]\nprint(TABLE)\nfor i in range(3):\n    TABLE.append(i)\nmain()"))
    assert result.ok
    assert "TABLE = [i * i for i in range(8)]" in result.code
    assert "print(TABLE)" not in result.code and "main()" not in result.code and "for i in range(3)" not in result.code
    assert [r.split(":")[0] for r in result.removed] == ["line 15", "line 16", "line 18"]


def test_comments_survive_cleaning():
    result = sanitize(_with("# keep me\nmain()"))
    assert "# keep me" in result.code


def test_syntax_error_reason_names_the_line():
    result = sanitize(GOOD + "\ndef broken(:\n    pass\n")
    assert not result.ok
    assert result.reason.startswith("syntax error at line 14:")


def test_missing_decoder_is_named():
    code = GOOD.split("def decompress_video_frame")[0]
    result = sanitize(code)
    assert not result.ok
    assert result.reason.startswith("missing the function decompress_video_frame")


def test_wrong_parameter_count_is_explained():
    result = sanitize(GOOD.replace("(frame, frame_index, config)", "(frame, config)"))
    assert not result.ok
    assert "compress_video_frame takes (frame, config)" in result.reason
    assert "three positional parameters" in result.reason


@pytest.mark.parametrize("module", ["os", "sys", "subprocess", "socket", "ctypes", "importlib", "pickle",
                                    "marshal", "shutil", "pathlib", "inspect", "builtins", "multiprocessing"])
def test_refused_imports_give_the_module_and_the_allowed_list(module):
    result = sanitize(f"import {module}\n" + GOOD)
    assert not result.ok
    assert result.reason.startswith(f"line 1: import of {module} is not allowed")
    assert "allowed: " in result.reason and "numpy" in result.reason


def test_from_import_of_a_refused_submodule_is_refused():
    result = sanitize("from numpy import ctypeslib\n" + GOOD)
    assert not result.ok
    assert "numpy.ctypeslib" in result.reason


@pytest.mark.parametrize("module", ["numpy", "torch", "math", "zlib", "lzma", "bz2", "struct", "io",
                                    "functools", "itertools", "collections", "dataclasses", "typing", "heapq"])
def test_codec_modules_are_allowed(module):
    assert sanitize(f"import {module}\n" + GOOD).ok


@pytest.mark.parametrize("name", ["eval", "exec", "compile", "__import__", "open", "globals"])
def test_refused_builtins(name):
    result = sanitize(_with(f"def f(x):\n    return {name}(x)"))
    assert not result.ok
    assert result.reason == f"line 15: use of {name} is not allowed"


def test_dunder_escape_is_refused():
    result = sanitize(_with("def f():\n    return ().__class__.__bases__[0].__subclasses__()"))
    assert not result.ok
    assert "attribute .__" in result.reason


def test_getattr_with_a_dunder_name_is_refused():
    result = sanitize(_with("def f(x):\n    return getattr(x, '__globals__')"))
    assert not result.ok
    assert "getattr" in result.reason


def test_size_is_capped():
    result = sanitize(GOOD + "#" * 2000, max_bytes=1000)
    assert not result.ok
    assert result.reason == f"the code is {len((GOOD + '#' * 2000 + chr(10)).encode())} bytes; the limit is 1000"


def test_hash_ignores_comments_docstrings_and_formatting():
    variant = GOOD.replace("def compress_video_frame(frame, frame_index, config):",
                           'def compress_video_frame( frame,frame_index ,  config ):\n    """Docstring."""  # note')
    variant = '"""Module docstring."""\n# a comment\n' + variant
    assert sanitize(variant).ast_hash == sanitize(GOOD).ast_hash


def test_hash_changes_when_the_code_changes():
    assert sanitize(GOOD.replace("zlib.compress(frame.tobytes())", "zlib.compress(frame.tobytes(), 9)")).ast_hash != sanitize(GOOD).ast_hash


def test_hash_ignores_a_stripped_main_block():
    assert sanitize(_with('if __name__ == "__main__":\n    print(1)')).ast_hash == sanitize(GOOD).ast_hash


@pytest.mark.parametrize("name", sorted(REFERENCE_CANDIDATES))
def test_reference_candidates_pass_untouched(name):
    code = REFERENCE_CANDIDATES[name].read_text()
    result = sanitize(code)
    assert result.ok, result.reason
    assert result.removed == []
    assert result.code == code
