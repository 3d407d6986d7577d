"""The gate between an LLM reply and a candidate module.

This is a *quality* gate, not a security boundary: it turns a reply into
clean module source, and rejects code that would certainly fail or that reaches
for things a codec has no business touching, each time with a short, specific
reason fit to show the LLM in its next prompt. The sandbox in
:mod:`sandbox.runner` must hold even for code that slips past it.

Steps, in order:

1. take the code from fenced blocks (the block that defines both contract
   functions when there are several; the raw reply when there is no fence);
2. cap its size and parse it (a syntax error becomes a reason with the line);
3. strip ``if __name__ == "__main__":`` blocks in any spelling, and drop other
   top-level statements that would run work at import (calls, loops, ``with``),
   keeping imports, definitions and assignments;
4. check both contract functions are top-level ``def`` with three positional
   parameters;
5. apply the import and name policy;
6. hash the normalised AST, so copies differing only in comments, docstrings or
   formatting share a hash.
"""

from __future__ import annotations

import ast
import hashlib
import re
from dataclasses import asdict, dataclass, field

CONTRACT: dict[str, tuple[str, ...]] = {
    "compress_video_frame": ("frame", "frame_index", "config"),
    "decompress_video_frame": ("compressed_data", "frame_index", "config"),
}

#: Top-level modules a codec may import.
ALLOWED_MODULES: frozenset[str] = frozenset({
    "numpy", "torch", "scipy", "math", "cmath", "zlib", "lzma", "bz2", "struct", "io",
    "functools", "itertools", "collections", "dataclasses", "typing", "typing_extensions",
    "heapq", "bisect", "array", "enum", "abc", "copy", "operator", "numbers", "fractions",
    "decimal", "statistics", "random", "hashlib", "binascii", "warnings", "__future__",
})

#: Refused with a pointed reason (anything else not allowed gets the generic one).
REFUSED_MODULES: frozenset[str] = frozenset({
    "os", "sys", "subprocess", "socket", "ctypes", "cffi", "importlib", "pickle", "marshal",
    "shelve", "shutil", "pathlib", "inspect", "builtins", "multiprocessing", "threading",
    "signal", "resource", "mmap", "gc", "code", "codeop", "pty", "tempfile", "glob",
    "urllib", "http", "requests", "asyncio", "selectors", "ssl", "ftplib", "platform",
    "runpy", "pkgutil", "zipimport", "dill", "cloudpickle", "joblib", "time", "traceback",
})

#: Submodules of allowed packages that load native code, pickles or reach the network.
REFUSED_SUBMODULES: frozenset[str] = frozenset({
    "numpy.ctypeslib", "numpy.f2py", "numpy.distutils", "numpy.testing",
    "torch.utils.cpp_extension", "torch.hub", "torch.multiprocessing", "torch.distributed",
    "torch.package", "torch.utils.data", "scipy.weave", "scipy.io",
})

REFUSED_NAMES: frozenset[str] = frozenset({
    "eval", "exec", "compile", "__import__", "open", "globals", "locals", "vars",
    "breakpoint", "input", "help", "exit", "quit", "__builtins__", "__loader__", "__spec__",
    "memoryview_from_address",
})

#: Attributes that lead from any object to the interpreter's internals.
REFUSED_ATTRIBUTES: frozenset[str] = frozenset({
    "__subclasses__", "__globals__", "__builtins__", "__code__", "__closure__", "__class__",
    "__bases__", "__base__", "__mro__", "__dict__", "__getattribute__", "__reduce__",
    "__reduce_ex__", "__import__", "__loader__", "__spec__", "__self__", "__func__",
    "__traceback__", "__frame__", "f_globals", "f_locals", "f_back", "gi_frame", "cr_frame",
    "tb_frame", "co_code", "ctypeslib", "cpp_extension", "f2py", "hub", "system", "popen",
    "load_library", "from_file",
})

MAX_BYTES_DEFAULT = 100_000

_FENCE = re.compile(r"^[ \t]*(`{3,}|~{3,})[ \t]*([\w+.-]*)[^\n]*\n(.*?)^[ \t]*\1[ \t]*$", re.S | re.M)


@dataclass
class SanitizeResult:
    ok: bool
    code: str | None  # the cleaned module source (None when no code could be parsed)
    reason: str | None  # why it was rejected; None when ok
    ast_hash: str | None  # sha256 of the normalised AST of the cleaned code
    removed: list[str] = field(default_factory=list)  # what was stripped, with line numbers

    def to_dict(self) -> dict:
        return asdict(self)


class _Reject(Exception):
    pass


# --------------------------------------------------------------------------- extraction


def extract_code(reply: str) -> str:
    """The code in an LLM reply: the fenced block that defines both contract
    functions (the one defining most of them, then the longest, when none has
    both); the whole reply when it has no fence."""
    blocks = [m.group(3) for m in _FENCE.finditer(reply) if m.group(2).lower() in ("", "python", "py", "python3")]
    if not blocks:
        return reply.strip("\n") + "\n"

    def score(block: str) -> tuple[int, int]:
        found = sum(1 for name in CONTRACT if re.search(rf"^\s*def\s+{name}\s*\(", block, re.M))
        return found, len(block)

    return max(blocks, key=score)


# --------------------------------------------------------------------------- cleaning


def _is_main_guard(test: ast.expr) -> bool:
    for node in ast.walk(test):
        if isinstance(node, ast.Compare):
            parts = [node.left, *node.comparators]
            names = any(isinstance(p, ast.Name) and p.id == "__name__" for p in parts)
            mains = any(
                isinstance(q, ast.Constant) and q.value == "__main__"
                for p in parts
                for q in ast.walk(p)
            )
            if names and mains:
                return True
    return False


def _describe(node: ast.stmt) -> str:
    text = ast.unparse(node).splitlines()[0] if not isinstance(node, ast.If) else "if " + ast.unparse(node.test) + ":"
    return text if len(text) <= 60 else text[:57] + "..."


_KEEP = (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef,
         ast.Assign, ast.AnnAssign, ast.AugAssign, ast.Pass)


def _clean_body(body: list[ast.stmt], removed: list[tuple[ast.stmt, str, bool]], top: bool) -> None:
    """Collect the statements to drop from ``body`` (recursing into if/try)."""
    for i, node in enumerate(body):
        if i == 0 and isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            continue  # docstring
        if top and isinstance(node, ast.If) and _is_main_guard(node.test):
            removed.append((node, f'line {node.lineno}: removed the `{_describe(node)}` block', top))
        elif isinstance(node, _KEEP):
            continue
        elif isinstance(node, ast.If):
            _clean_body(node.body, removed, False)
            _clean_body(node.orelse, removed, False)
        elif isinstance(node, ast.Try | getattr(ast, "TryStar", ast.Try)):
            _clean_body(node.body, removed, False)
            for handler in node.handlers:
                _clean_body(handler.body, removed, False)
            _clean_body(node.orelse, removed, False)
            _clean_body(node.finalbody, removed, False)
        else:
            kind = {ast.Expr: "call", ast.For: "loop", ast.While: "loop", ast.AsyncFor: "loop",
                    ast.With: "with block", ast.AsyncWith: "with block"}.get(type(node), "statement")
            removed.append((node, f"line {node.lineno}: removed top-level {kind} `{_describe(node)}`", top))


def _strip(source: str, tree: ast.Module) -> tuple[str, list[str]]:
    """Remove work-at-import statements by line ranges, so comments survive."""
    found: list[tuple[ast.stmt, str, bool]] = []
    _clean_body(tree.body, found, True)
    if not found:
        return source, []
    lines = source.splitlines(keepends=True)
    starts = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.stmt):
            for ln in range(node.lineno, node.end_lineno + 1):
                starts.setdefault(ln, []).append(node)
    replacement: dict[int, str | None] = {}
    for node, _note, top in found:
        shared = any(
            other is not node and not _inside(other, node) and not _inside(node, other)
            for ln in range(node.lineno, node.end_lineno + 1)
            for other in starts.get(ln, [])
        )
        if shared:  # `a = 1; main()`: line edits are unsafe, fall back to unparsing
            return _strip_by_unparse(tree, found), [n for _, n, _ in found]
        for ln in range(node.lineno, node.end_lineno + 1):
            replacement[ln] = None
        if not top:
            indent = " " * node.col_offset
            replacement[node.lineno] = f"{indent}pass  # removed by the sanitizer\n"
    out = [replacement.get(i + 1, line) for i, line in enumerate(lines) if replacement.get(i + 1, line) is not None]
    cleaned = "".join(out)
    try:
        ast.parse(cleaned)
    except SyntaxError:
        cleaned = _strip_by_unparse(tree, found)
    return cleaned, [n for _, n, _ in found]


def _inside(inner: ast.AST, outer: ast.AST) -> bool:
    return any(inner is n for n in ast.walk(outer))


def _strip_by_unparse(tree: ast.Module, found) -> str:
    drop = {id(node) for node, _, _ in found}

    class Dropper(ast.NodeTransformer):
        def generic_visit(self, node):
            super().generic_visit(node)
            for attr in ("body", "orelse", "finalbody"):
                body = getattr(node, attr, None)
                if isinstance(body, list) and body and isinstance(body[0], ast.stmt):
                    kept = [s for s in body if id(s) not in drop]
                    if not kept and not isinstance(node, ast.Module) and attr != "orelse" and attr != "finalbody":
                        kept = [ast.Pass()]
                    setattr(node, attr, kept)
            return node

    return ast.unparse(ast.fix_missing_locations(Dropper().visit(tree))) + "\n"


# --------------------------------------------------------------------------- checks


def _check_contract(tree: ast.Module) -> None:
    defs: dict[str, ast.stmt] = {}
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name in CONTRACT:
            defs[node.name] = node
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for t in targets:
                if isinstance(t, ast.Name) and t.id in CONTRACT:
                    defs[t.id] = node
    for name, params in CONTRACT.items():
        node = defs.get(name)
        signature = f"def {name}({', '.join(params)})"
        if node is None:
            raise _Reject(f"missing the function {name}; define `{signature}` at module top level")
        if isinstance(node, ast.AsyncFunctionDef):
            raise _Reject(f"{name} must be a plain function, not async; define `{signature}`")
        if not isinstance(node, ast.FunctionDef):
            raise _Reject(f"{name} must be defined with def at module top level (line {node.lineno}); define `{signature}`")
        args = node.args
        positional = [*args.posonlyargs, *args.args]
        required = len(positional) - len(args.defaults)
        if required > 3 or (len(positional) < 3 and args.vararg is None) or args.kwonlyargs and any(
            d is None for d in args.kw_defaults
        ):
            got = ", ".join(a.arg for a in positional)
            raise _Reject(
                f"{name} takes ({got}) at line {node.lineno}; it must take exactly three positional "
                f"parameters: `{signature}`"
            )


def _module_allowed(name: str) -> str | None:
    """None if importing ``name`` is fine, else the reason."""
    top = name.split(".")[0]
    for refused in REFUSED_SUBMODULES:
        if name == refused or name.startswith(refused + "."):
            return f"import of {name} is not allowed (native code, pickles or network)"
    if top in ALLOWED_MODULES:
        return None
    allowed = ", ".join(sorted(m for m in ALLOWED_MODULES if m != "__future__"))
    if top in REFUSED_MODULES:
        return f"import of {top} is not allowed: codecs get no OS, process, file or network access; allowed: {allowed}"
    return f"import of {top} is not allowed; allowed: {allowed}"


def _check_policy(tree: ast.Module) -> None:
    for node in ast.walk(tree):
        line = getattr(node, "lineno", "?")
        if isinstance(node, ast.Import):
            for alias in node.names:
                why = _module_allowed(alias.name)
                if why:
                    raise _Reject(f"line {line}: {why}")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                raise _Reject(f"line {line}: relative imports are not allowed; a candidate is a single module")
            why = _module_allowed(node.module or "")
            if why is None:
                for alias in node.names:
                    why = _module_allowed(f"{node.module}.{alias.name}") if alias.name != "*" else None
                    if why:
                        break
            if why:
                raise _Reject(f"line {line}: {why}")
        elif isinstance(node, ast.Name) and node.id in REFUSED_NAMES:
            raise _Reject(f"line {line}: use of {node.id} is not allowed")
        elif isinstance(node, ast.Attribute) and node.attr in REFUSED_ATTRIBUTES:
            raise _Reject(f"line {line}: access to attribute .{node.attr} is not allowed")
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in (
            "getattr", "setattr", "delattr", "hasattr"
        ):
            name_arg = node.args[1] if len(node.args) > 1 else None
            if not (isinstance(name_arg, ast.Constant) and isinstance(name_arg.value, str)):
                raise _Reject(f"line {line}: {node.func.id} needs a constant attribute name")
            if name_arg.value.startswith("__") or name_arg.value in REFUSED_ATTRIBUTES:
                raise _Reject(f"line {line}: {node.func.id}(..., {name_arg.value!r}) is not allowed")


# --------------------------------------------------------------------------- hashing


def ast_hash(code: str) -> str:
    """sha256 of the normalised AST: docstrings removed, no line/column
    attributes, so comments, docstrings and formatting do not change it."""
    tree = ast.parse(code)
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(node, ast.Module | ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) and body:
            first = body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
                node.body = body[1:] or [ast.Pass()]
    dumped = ast.dump(tree, annotate_fields=True, include_attributes=False)
    return hashlib.sha256(dumped.encode("utf-8")).hexdigest()


# --------------------------------------------------------------------------- entry


def sanitize(reply: str, *, max_bytes: int = MAX_BYTES_DEFAULT) -> SanitizeResult:
    """Turn an LLM reply into a candidate module, or say specifically why not."""
    if not isinstance(reply, str):
        raise TypeError(f"reply must be str, got {type(reply).__name__}")
    code = extract_code(reply)
    size = len(code.encode("utf-8"))
    if size > max_bytes:
        return SanitizeResult(False, None, f"the code is {size} bytes; the limit is {max_bytes}", None)
    if not code.strip():
        return SanitizeResult(False, None, "the reply contains no code", None)
    try:
        tree = ast.parse(code)
    except SyntaxError as exc:
        detail = f"syntax error at line {exc.lineno}: {exc.msg}"
        if exc.text:
            detail += f" in `{exc.text.strip()[:80]}`"
        return SanitizeResult(False, None, detail, None)
    except (ValueError, RecursionError) as exc:  # null bytes, absurd nesting
        return SanitizeResult(False, None, f"the code cannot be parsed: {exc}", None)

    cleaned, removed = _strip(code, tree)
    tree = ast.parse(cleaned)
    digest = ast_hash(cleaned)
    try:
        _check_contract(tree)
        _check_policy(tree)
    except _Reject as exc:
        return SanitizeResult(False, cleaned, str(exc), digest, removed)
    return SanitizeResult(True, cleaned, None, digest, removed)
