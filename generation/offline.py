"""Offline evolution: new candidates from old ones without any LLM.

The generator edits real program text. It parses a parent with :mod:`ast`, finds its
*tunables* and rewrites their source spans in place (so comments and layout survive,
and a later LLM prompt still reads well):

* numeric top-level constants (``MAX_SCALE``, ``LUMA_STEP``, ``ROUNDING``, ``MV_COST``,
  ``BLOCK`` ...), each within a range that keeps the codec working (:data:`RULES`);
* quantisation matrices (tuples of tuples of numbers such as ``LUMA_TABLE``): scaled,
  flattened toward their mean, steepened, tilted along frequency, or one entry changed;
* ``DEFAULT_CONFIG`` entries (``keyint``, ``search_range`` ...);
* the LZMA preset of a filter chain whose dictionary size is pinned (the preset then
  changes only the encoder's effort, never what the decoder needs);
* the entropy coder: every ``lzma``/``zlib``/``bz2`` ``compress``/``decompress`` call of
  the module switched together to another coder and level, the import added.

Crossover takes a parent's structure and, for each tunable the two parents share, one
of the two values at random: the parents must be of one family (same seed lineage, or
failing that the same set of top-level functions).

Every program produced passes the injected ``validate`` (the sanitizer, wrapped) and
differs, after normalisation (``ast.unparse`` of the parse, so comments and formatting do
not count), from the seeds and from everything produced or shown before. The randomness
of request ``index`` comes from ``random.Random(f"{seed}:{index}:{request.seed}")``, so
the same seed gives the same sequence, and a resumed campaign regenerates the same
candidate for the same index (given the same ``seen`` set).
"""

from __future__ import annotations

import ast
import functools
import math
import random
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from generation.base import CandidateInfo, GenerationFailure, GenerationRequest, Generated

Validator = Callable[[str], "tuple[bool, str | None]"]

#: Names never touched: bitstream identity and exact colour transforms (changing one
#: side of a colour matrix pair loses quality for nothing).
FROZEN = frozenset({"MAGIC", "VERSION", "HEADER", "RGB_TO_YCBCR", "YCBCR_TO_RGB", "FRAME_I", "FRAME_P"})
FROZEN_PARTS = ("MAGIC", "VERSION", "HEADER")  # e.g. HEADER_SIZE in an LLM-written module
#: System-set config keys: mutating their defaults changes nothing measured.
SYSTEM_KEYS = frozenset({"quality", "width", "height", "fps", "device"})


@dataclass(frozen=True)
class Rule:
    """How one tunable may change.

    ``kind``: ``"scale"`` multiplies by a log-uniform factor in [1/spread, spread];
    ``"shift"`` adds a uniform offset in [-spread, spread]; ``"choice"`` picks another
    of ``choices``. The result is clamped to [lo, hi] (and rounded for integers).
    """

    kind: str
    spread: float = 1.4
    lo: float = -math.inf
    hi: float = math.inf
    choices: tuple = ()
    integer: bool = False
    #: Values at or above the clip's frame count all act alike (a keyframe interval
    #: longer than the clip means "frame 0 only"), so a change within that range
    #: would reproduce the parent's bitstream: it is never proposed.
    saturates_at_frames: bool = False


RULES: dict[str, Rule] = {
    # quality -> step scale: scale = MAX_SCALE * (MIN_SCALE / MAX_SCALE) ** quality
    "MAX_SCALE": Rule("scale", 1.4, 2.0, 64.0),
    "MIN_SCALE": Rule("scale", 1.4, 0.03, 1.5),
    # uniform quantiser steps (torch_dct), residual step (inter_mc)
    "LUMA_STEP": Rule("scale", 1.3, 2.0, 128.0),
    "CHROMA_STEP": Rule("scale", 1.5, 2.0, 256.0),
    "FLAT_STEP": Rule("scale", 1.3, 2.0, 128.0),
    # rounding offsets: 0.5 plain rounding, lower = wider dead zone
    "ROUNDING": Rule("shift", 0.1, 0.05, 0.5),
    "INTRA_ROUNDING": Rule("shift", 0.1, 0.05, 0.5),
    "INTER_ROUNDING": Rule("shift", 0.08, 0.02, 0.5),
    # motion
    "MV_COST": Rule("scale", 1.6, 0.0, 32.0),
    "SCENE_CUT_RATIO": Rule("scale", 1.3, 0.3, 2.0),
    "COARSE_RANGE": Rule("choice", choices=(4, 6, 8, 12, 16), integer=True),
    "BLOCK": Rule("choice", choices=(8, 16), integer=True),  # motion block; planes are padded to 16
    "DEFAULT_CONFIG.keyint": Rule(
        "choice", choices=(1, 2, 4, 8, 15, 30, 60, 120), integer=True, saturates_at_frames=True
    ),
    "DEFAULT_CONFIG.search_range": Rule("choice", choices=(None, 2, 4, 8, 16, 32), integer=True),
    # Encoder effort only: low presets and levels never won in trials, so they are not offered.
    "lzma.preset": Rule("choice", choices=(6, 7, 8, 9), integer=True),
    "zlib.level": Rule("choice", choices=(6, 7, 8, 9), integer=True),
    "bz2.level": Rule("choice", choices=(5, 7, 9), integer=True),
}
#: How often a tunable is picked relative to others (default 1): the quantiser moves rate
#: and quality most; encoder effort settings rarely matter.
WEIGHTS: dict[str, float] = {"lzma.preset": 0.2, "zlib.level": 0.2, "bz2.level": 0.2, "matrix": 2.0}
DEFAULT_FLOAT_RULE = Rule("scale", 1.3)
DEFAULT_INT_RULE = Rule("scale", 1.3, integer=True)

CODERS = ("lzma", "zlib", "bz2")


class OfflineError(ValueError):
    """A seed program cannot be used (does not parse, or fails validation)."""


# --------------------------------------------------------------------------- source edits


def _offsets(source: str) -> list[int]:
    starts = [0]
    for line in source.splitlines(keepends=True):
        starts.append(starts[-1] + len(line))
    return starts


def _pos(source_lines: list[str], starts: list[int], lineno: int, col_bytes: int) -> int:
    """Character offset of (line, UTF-8 byte column), as ast reports positions."""
    line = source_lines[lineno - 1]
    return starts[lineno - 1] + len(line.encode("utf-8")[:col_bytes].decode("utf-8", "ignore"))


@dataclass(frozen=True)
class _Edit:
    start: int
    end: int
    text: str


def _span(source: str, node: ast.AST) -> tuple[int, int]:
    lines = source.splitlines(keepends=True)
    starts = _offsets(source)
    return (
        _pos(lines, starts, node.lineno, node.col_offset),
        _pos(lines, starts, node.end_lineno, node.end_col_offset),
    )


def _apply(source: str, edits: list[_Edit]) -> str:
    for edit in sorted(edits, key=lambda e: e.start, reverse=True):
        source = source[: edit.start] + edit.text + source[edit.end :]
    return source


@functools.lru_cache(maxsize=512)
def normalise(code: str) -> str:
    """Code without comments or formatting differences (``ast.unparse`` of its parse)."""
    return ast.unparse(ast.parse(code))


# --------------------------------------------------------------------------- tunables


def _number(node: ast.AST) -> float | int | None:
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return node.value
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add | ast.Sub | ast.Mult | ast.Div):
        # `1.0 / 6.0` style constants; a mutation rewrites them as one literal.
        left, right = _number(node.left), _number(node.right)
        if left is None or right is None or isinstance(node.op, ast.Div) and right == 0:
            return None
        ops = {ast.Add: left + right, ast.Sub: left - right, ast.Mult: left * right}
        return ops[type(node.op)] if type(node.op) in ops else left / right
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        inner = _number(node.operand)
        if inner is not None:
            return -inner if isinstance(node.op, ast.USub) else inner
    return None


def _matrix(node: ast.AST) -> list | None:
    """Nested lists of numbers for a tuple/list literal of numbers (1-D or 2-D), else None."""
    if not isinstance(node, ast.Tuple | ast.List) or not node.elts:
        return None
    if all(_number(e) is not None for e in node.elts):
        return [_number(e) for e in node.elts] if len(node.elts) >= 4 else None
    rows = [_matrix(e) for e in node.elts]
    if all(isinstance(r, list) and r and not isinstance(r[0], list) for r in rows) and len({len(r) for r in rows}) == 1:
        return rows
    return None


@dataclass(frozen=True)
class Tunable:
    key: str  # "LUMA_STEP", "DEFAULT_CONFIG.keyint", "lzma.preset@3", "LUMA_TABLE"
    rule_key: str  # the key into RULES
    kind: str  # "number", "option" (number or None), "matrix"
    value: object
    node: ast.AST
    is_list: bool = False


@functools.lru_cache(maxsize=256)
def find_tunables(source: str) -> tuple[Tunable, ...]:
    """The tunables of a module, in source order (cached: parents recur across requests)."""
    tree = ast.parse(source)
    found: list[Tunable] = []
    for stmt in tree.body:
        if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name):
            name, value = stmt.targets[0].id, stmt.value
        elif isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name) and stmt.value is not None:
            name, value = stmt.target.id, stmt.value
        else:
            continue
        if name in FROZEN or any(part in name for part in FROZEN_PARTS):
            continue
        if not name.isupper() and name != "DEFAULT_CONFIG":
            continue
        if name == "DEFAULT_CONFIG" and isinstance(value, ast.Dict):
            for k, v in zip(value.keys, value.values):
                if not (isinstance(k, ast.Constant) and isinstance(k.value, str)) or k.value in SYSTEM_KEYS:
                    continue
                key = f"DEFAULT_CONFIG.{k.value}"
                num = _number(v)
                if num is not None and not isinstance(num, bool):
                    found.append(Tunable(key, key, "number", num, v))
                elif isinstance(v, ast.Constant) and v.value is None and key in RULES:
                    found.append(Tunable(key, key, "option", None, v))
            continue
        num = _number(value)
        if num is not None and not isinstance(num, bool):
            found.append(Tunable(name, name, "number", num, value))
            continue
        mat = _matrix(value)
        if mat is not None:
            found.append(Tunable(name, name, "matrix", mat, value, isinstance(value, ast.List)))
    # Encoder-only settings inside functions: an LZMA preset whose dict_size is pinned,
    # and the level of zlib/bz2 compress calls.
    n = 0
    for node in ast.walk(tree):
        if isinstance(node, ast.Dict):
            keys = [k.value for k in node.keys if isinstance(k, ast.Constant)]
            if "preset" in keys and "dict_size" in keys:
                v = node.values[keys.index("preset")]
                if isinstance(v, ast.Constant) and type(v.value) is int:
                    found.append(Tunable(f"lzma.preset@{n}", "lzma.preset", "number", v.value, v))
                    n += 1
        elif isinstance(node, ast.Call) and _coder_call(node) in (("zlib", "compress"), ("bz2", "compress")):
            if len(node.args) >= 2 and isinstance(node.args[1], ast.Constant) and type(node.args[1].value) is int:
                coder = _coder_call(node)[0]
                found.append(Tunable(f"{coder}.level@{n}", f"{coder}.level", "number", node.args[1].value, node.args[1]))
                n += 1
    return tuple(found)


def _coder_call(node: ast.Call) -> tuple[str, str] | None:
    f = node.func
    if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) and f.value.id in CODERS:
        if f.attr in ("compress", "decompress"):
            return f.value.id, f.attr
    return None


# --------------------------------------------------------------------------- value changes


def _fmt_number(value: float | int, integer: bool) -> str:
    if integer:
        return str(int(value))
    text = f"{float(value):.4g}"
    return repr(float(text))


def _mutate_number(value, rule: Rule, rng: random.Random, n_frames: int | None = None):
    if rule.kind == "choice":
        options = [c for c in rule.choices if c != value]
        if rule.saturates_at_frames and n_frames and isinstance(value, int | float):
            # Only values that act differently on this clip.
            options = [c for c in options if c is None or min(c, n_frames) != min(value, n_frames)]
        return rng.choice(options) if options else value
    if rule.kind == "shift":
        new = value + rng.uniform(-rule.spread, rule.spread)
    else:  # scale
        if value == 0:
            new = rng.uniform(0.0, 1.0) * (1 if rule.hi > 0 else -1)
        else:
            new = value * math.exp(rng.uniform(-math.log(rule.spread), math.log(rule.spread)))
    new = min(rule.hi, max(rule.lo, new))
    if rule.integer or isinstance(value, int) and not isinstance(value, bool):
        new = int(round(new))
        if new == value:  # a small integer that a scale rounds back still moves by one
            new = int(min(rule.hi, max(rule.lo, value + rng.choice((-1, 1)))))
    return new


def _fmt_matrix(mat: list, is_list: bool, indent: str) -> str:
    o, c = ("[", "]") if is_list else ("(", ")")
    is_int = all(isinstance(x, int) for row in (mat if isinstance(mat[0], list) else [mat]) for x in row)

    def cell(x):
        return _fmt_number(x, is_int)

    if not isinstance(mat[0], list):
        return o + ", ".join(cell(x) for x in mat) + c
    rows = [f"{indent}    {o}" + ", ".join(cell(x) for x in row) + f"{c}," for row in mat]
    return o + "\n" + "\n".join(rows) + f"\n{indent}{c}"


def _mutate_matrix(mat: list, rng: random.Random) -> tuple[list, str]:
    two_d = isinstance(mat[0], list)
    rows = mat if two_d else [mat]
    is_int = all(isinstance(x, int) for row in rows for x in row)
    flat = [x for row in rows for x in row]
    mean = sum(flat) / len(flat)
    op = rng.choice(("scale", "flatten", "steepen", "tilt", "entry"))
    if op == "scale":
        f = math.exp(rng.uniform(-math.log(1.4), math.log(1.4)))
        new = [[x * f for x in row] for row in rows]
        note = f"scaled by {f:.3f}"
    elif op == "flatten":
        a = rng.uniform(0.15, 0.6)
        new = [[x + a * (mean - x) for x in row] for row in rows]
        note = f"flattened {a:.2f} of the way toward its mean {mean:.1f}"
    elif op == "steepen":
        a = rng.uniform(0.1, 0.4)
        new = [[x + a * (x - mean) for x in row] for row in rows]
        note = f"steepened by {a:.2f} away from its mean {mean:.1f}"
    elif op == "tilt":
        t = rng.uniform(-0.5, 0.5)
        size = max(1, len(rows) + len(rows[0]) - 2)
        new = [[x * (1 + t * (i + j) / size) for j, x in enumerate(row)] for i, row in enumerate(rows)]
        note = f"tilted by {t:+.2f} from low to high frequencies"
    else:
        i, j = rng.randrange(len(rows)), rng.randrange(len(rows[0]))
        f = math.exp(rng.uniform(-math.log(1.6), math.log(1.6)))
        new = [list(row) for row in rows]
        new[i][j] = rows[i][j] * f
        note = f"entry ({i}, {j}) scaled by {f:.3f}"
    if is_int:
        new = [[int(min(255, max(1, round(x)))) for x in row] for row in new]
    else:
        new = [[float(f"{max(1e-3, x):.4g}") for x in row] for row in new]
    return (new if two_d else new[0]), note


# --------------------------------------------------------------------------- operators


def _indent_of(source: str, node: ast.AST) -> str:
    line = source.splitlines()[node.lineno - 1]
    return line[: len(line) - len(line.lstrip())]


def mutate_tunable(source: str, rng: random.Random, n_frames: int | None = None) -> tuple[str, str] | None:
    """Change one tunable; None when the module has none or the change would act like the old value.

    ``n_frames``: the clip's frame count, when known (see :attr:`Rule.saturates_at_frames`).
    """
    tunables = find_tunables(source)
    if not tunables:
        return None
    weights = [WEIGHTS.get("matrix" if t.kind == "matrix" else t.rule_key, 1.0) for t in tunables]
    t = rng.choices(tunables, weights)[0]
    start, end = _span(source, t.node)
    if t.kind == "matrix":
        new, note = _mutate_matrix(t.value, rng)
        text = _fmt_matrix(new, t.is_list, _indent_of(source, t.node) if isinstance(t.value[0], list) else "")
        # The matrix literal starts on its assignment line: keep the closing bracket's indent
        # the assignment's.
        return _apply(source, [_Edit(start, end, text)]), f"{t.key}: {note}"
    rule = RULES.get(t.rule_key) or (DEFAULT_INT_RULE if isinstance(t.value, int) else DEFAULT_FLOAT_RULE)
    new = _mutate_number(t.value, rule, rng, n_frames)
    text = "None" if new is None else _fmt_number(new, rule.integer or isinstance(t.value, int))
    old = "None" if t.value is None else _fmt_number(t.value, rule.integer or isinstance(t.value, int))
    if text == old:
        return None
    return _apply(source, [_Edit(start, end, text)]), f"{t.key}: {old} -> {text}"


def switch_coder(source: str, rng: random.Random) -> tuple[str, str] | None:
    """Switch every lzma/zlib/bz2 compress and decompress call to one other coder."""
    tree = ast.parse(source)
    calls = [(n, _coder_call(n)) for n in ast.walk(tree) if isinstance(n, ast.Call) and _coder_call(n)]
    if not calls or not all(n.args for n, _ in calls):
        return None
    used = {c for _, (c, _) in calls}
    target = rng.choice([c for c in CODERS if c not in used or len(used) > 1])
    if target == "lzma":
        level = rng.choice(RULES["lzma.preset"].choices)
        filters = f'[{{"id": lzma.FILTER_LZMA2, "preset": {level}, "dict_size": 1 << 20}}]'
        make = {
            "compress": lambda data: f"lzma.compress({data}, format=lzma.FORMAT_RAW, filters={filters})",
            "decompress": lambda data: f"lzma.decompress({data}, format=lzma.FORMAT_RAW, filters={filters})",
        }
    else:
        level = rng.choice(RULES[f"{target}.level"].choices)
        make = {
            "compress": lambda data: f"{target}.compress({data}, {level})",
            "decompress": lambda data: f"{target}.decompress({data})",
        }
    edits = []
    for node, (_, op) in calls:
        start, end = _span(source, node)
        data = ast.get_source_segment(source, node.args[0])
        edits.append(_Edit(start, end, make[op](data)))
    imported = {a.name for s in tree.body if isinstance(s, ast.Import) for a in s.names}
    if target not in imported:
        imports = [s for s in tree.body if isinstance(s, ast.Import | ast.ImportFrom)]
        if imports:
            _, end = _span(source, imports[-1])
            edits.append(_Edit(end, end, f"\nimport {target}"))
        else:
            edits.append(_Edit(0, 0, f"import {target}\n"))
    old = "/".join(sorted(used))
    return _apply(source, edits), f"entropy coder: {old} -> {target} (level {level})"


def crossover(a: str, b: str, rng: random.Random) -> tuple[str, list[str]]:
    """``a``'s structure with each shared tunable taken from ``a`` or ``b`` at random."""
    mine = {t.key: t for t in find_tunables(a)}
    theirs = {t.key: t for t in find_tunables(b)}
    edits, notes = [], []
    for key, t in mine.items():
        other = theirs.get(key)
        if other is None or other.kind != t.kind or other.value == t.value or rng.random() < 0.5:
            continue
        start, end = _span(a, t.node)
        text = ast.get_source_segment(b, other.node)
        if t.kind == "matrix" and isinstance(t.value[0], list):
            text = _fmt_matrix(other.value, t.is_list, _indent_of(a, t.node))
        edits.append(_Edit(start, end, text))
        notes.append(f"{key} from the second parent")
    return _apply(a, edits), notes


# --------------------------------------------------------------------------- generator


def _signature(code: str) -> frozenset[str]:
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return frozenset()
    return frozenset(s.name for s in tree.body if isinstance(s, ast.FunctionDef))


def same_family(a: CandidateInfo, b: CandidateInfo) -> bool:
    """Same seed lineage when both say; otherwise the same set of top-level functions."""
    if a.family and b.family:
        return a.family == b.family
    return _signature(a.code) == _signature(b.code)


class OfflineGenerator:
    """Evolution over program text, seeded and reproducible (see the module docstring).

    ``seeds`` maps a family name to its seed program (e.g. the reference candidates'
    source). ``validate(code) -> (ok, reason)`` is the sanitizer, injected so this
    package does not import the sandbox. ``seen`` pre-loads programs already stored
    (for a resumed campaign), so none is produced again.
    """

    name = "offline"
    model = None

    def __init__(
        self,
        seed: int,
        seeds: Mapping[str, str],
        *,
        validate: Validator | None = None,
        seen: Iterable[str] = (),
        max_mutations: int = 3,
        coder_rate: float = 0.05,
        max_tries: int = 64,
    ):
        if not seeds:
            raise ValueError("the offline generator needs at least one seed program")
        self.seed = int(seed)
        self.validate = validate
        self.max_mutations = max_mutations
        self.coder_rate = coder_rate
        self.max_tries = max_tries
        self.seeds: dict[str, str] = {}
        self._seen: set[str] = set()
        for family in sorted(seeds):
            code = seeds[family]
            try:
                key = normalise(code)
            except SyntaxError as exc:
                raise OfflineError(f"seed {family!r} does not parse: line {exc.lineno}: {exc.msg}") from None
            if validate is not None:
                ok, reason = validate(code)
                if not ok:
                    raise OfflineError(f"seed {family!r} fails validation: {reason}")
            self.seeds[family] = code
            self._seen.add(key)
        for code in seen:
            self._remember(code)

    def __repr__(self) -> str:
        return f"OfflineGenerator(seed={self.seed}, seeds={sorted(self.seeds)})"

    def _remember(self, code: str) -> bool:
        """Add to the seen set; False when it was there already."""
        try:
            key = normalise(code)
        except (SyntaxError, ValueError):
            return True
        if key in self._seen:
            return False
        self._seen.add(key)
        return True

    def _is_new(self, code: str) -> bool:
        try:
            return normalise(code) not in self._seen
        except (SyntaxError, ValueError):
            return False

    def _mutate(self, code: str, rng: random.Random, n_frames: int | None = None) -> tuple[str, list[str]]:
        n = 1
        while n < self.max_mutations and rng.random() < 0.5:
            n += 1
        notes = []
        mutate = functools.partial(mutate_tunable, n_frames=n_frames)
        for _ in range(n):
            op = switch_coder if rng.random() < self.coder_rate else mutate
            out = op(code, rng) or mutate(code, rng)
            if out is not None:
                code, note = out
                notes.append(note)
        return code, notes

    def generate(self, request: GenerationRequest) -> Generated:
        rng = random.Random(f"{self.seed}:{request.index}:{request.seed}")
        for shown in (*request.parents, *request.top_k):
            self._remember(shown.code)
        parents = list(request.parents)
        if not parents:
            families = sorted(self.seeds)
            family = families[request.index % len(families)]
            parents = [CandidateInfo(code=self.seeds[family], label=f"seed {family}", family=family)]
        base = parents[0]
        if not find_tunables(base.code):
            # Nothing to tune (e.g. an LLM-written module): start again from a seed of its family.
            family = base.family if base.family in self.seeds else sorted(self.seeds)[request.index % len(self.seeds)]
            base = CandidateInfo(code=self.seeds[family], label=f"seed {family}", family=family)
            parents = [base]
        partner = next((p for p in parents[1:] if same_family(base, p)), None)
        mode = "crossover" if partner is not None and request.mode in (None, "crossover") else "mutation"

        rejected: list[str] = []
        for attempt in range(1, self.max_tries + 1):
            notes: list[str] = []
            code = base.code
            if mode == "crossover":
                code, notes = crossover(base.code, partner.code, rng)
                if not notes or rng.random() < 0.5:
                    code, more = self._mutate(code, rng, request.task.n_frames)
                    notes += more
            else:
                code, notes = self._mutate(code, rng, request.task.n_frames)
            if not notes or not self._is_new(code):
                continue
            if self.validate is not None:
                ok, reason = self.validate(code)
                if not ok:
                    rejected.append(reason or "rejected")
                    continue
            self._remember(code)
            return self._generated(request, parents, partner, mode, code, notes, attempt)
        if rejected:
            error = GenerationFailure(
                "invalid_program", f"{len(rejected)} of {self.max_tries} programs failed validation; last: {rejected[-1]}"
            )
        else:
            error = GenerationFailure("exhausted", f"no new distinct program in {self.max_tries} tries")
        return self._generated(request, parents, partner, mode, None, [], self.max_tries, error)

    def _generated(self, request, parents, partner, mode, code, notes, attempts, error=None) -> Generated:
        used = [parents[0]] + ([partner] if mode == "crossover" else [])
        names = " x ".join(p.name + (f" ({p.family})" if p.family and p.family not in p.name else "") for p in used)
        prompt = (
            f"offline evolution, seed {self.seed}, index {request.index}: {mode} of {names}\n"
            + "".join(f"- {n}\n" for n in notes)
        )
        return Generated(
            generator=self.name,
            mode=mode,
            prompt=prompt,
            code=code,
            raw_reply=code,
            model=None,
            parent_ids=tuple(p.candidate_id for p in used if p.candidate_id is not None),
            prompt_tokens=None,
            completion_tokens=None,
            cost_usd=0.0,
            error=error,
            attempts=attempts,
            notes=tuple(notes),
        )
