"""Reading bishengir-compile's final HIVM (``module.hivm.opt.mlir``): what one tile does.

The entry function's persistent loop (the first ``scf.for`` with runtime bounds) is the tile
loop. Its body is one tile; where it branches (``scf.if``: the strided kernel moves a tile
unmasked or masked) each branch, with what the loop body does around it, is a tile body of its
own, and so is a branch after the loop (the flat kernel's masked last tile). In a body:

- vector instructions are the library calls on UB memrefs only (``v*``, ``broadcast_scalar_*``,
  and the data movements ``transpose_*`` (an on-chip turn) and ``interleave_*``), each with the
  elements of its first operand per call and the bytes the vector unit walks (rows padded to
  32 B in UB included); a constant-bound ``scf.for`` inside the body is a per-row loop, and
  multiplies what it holds by its trip count;
- DMAs are ``load_gm_to_ubuf_*`` (in) and ``store_ubuf_to_gm_*`` (out), with the global side's
  shape, strides and item size, and the UB side's layout: a DMA into or out of UB rows padded
  to 32 B moves one burst per row, so its packet is the shorter of the two sides'
  unit-stride runs;
- scalar ``memref.load``/``memref.store``, ``pipe_barrier``, ``set_flag``/``wait_flag``.

The Ascend 950 compiler (``bishengir-compile-a5``) is register-based and leaves control flow as
blocks (``cf.br``/``cf.cond_br``): its tile loop is the entry function's first loop (from the
first block label to the branch back to it; both sides of a branch inside it are counted), and
its vector work is calls of outlined vector functions (``hivm.vector_function``) that walk the
UB in 256-byte registers. Each compute intrinsic in such a function's loops counts as one vector
instruction per call (register loads and stores, mask generation and set-up outside its loops do
not). Such a function walks a 2-D tile row by row in its nested loops by design: none of it is
counted as a per-row loop (that measure is A2/A3's, where each call covers the whole tile).

    read(hivm_text) -> Hivm    the target spec and every tile body
"""

import dataclasses
import math
import re
from typing import Dict, List, Optional, Tuple

ITEMSIZE = {"f32": 4, "f16": 2, "bf16": 2, "i1": 1, "i8": 1, "i16": 2, "i32": 4, "i64": 8,
            "f64": 8}


@dataclasses.dataclass(frozen=True)
class Memref:
    shape: Tuple[Optional[int], ...]      # None: dynamic
    dtype: str
    strides: Tuple[Optional[int], ...]    # in elements; None: dynamic
    space: str                            # "gm", "ub" or ""

    @property
    def elements(self) -> int:
        return math.prod(d or 1 for d in self.shape)

    @property
    def itemsize(self) -> int:
        return ITEMSIZE.get(self.dtype, 4)

    @property
    def span(self) -> int:
        """Elements from the first to the last one it reaches (padding between rows included)."""
        if not self.shape:
            return 1
        if any(d is None for d in self.shape) or any(s is None for s in self.strides):
            return self.elements
        return sum((d - 1) * s for d, s in zip(self.shape, self.strides)) + 1

    @property
    def burst(self) -> int:
        """Elements of its longest unit-stride run (a DMA's packet)."""
        run = 1
        for size, stride in zip(reversed(self.shape), reversed(self.strides)):
            if stride != run or size is None:
                break
            run *= size
        return run if self.strides and self.strides[-1] == 1 else 1


@dataclasses.dataclass(frozen=True)
class VectorOp:
    name: str          # the HIVM call, e.g. "vsub_1d_float"
    elements: int      # of its first operand, per call
    span_bytes: int    # what the vector unit walks per call
    itemsize: int      # the width its repeats are counted in
    calls: int         # per tile
    in_row_loop: bool


@dataclasses.dataclass(frozen=True)
class Transfer:
    direction: str     # "in" (HBM -> UB) or "out" (UB -> HBM)
    memref: Memref     # the global side
    calls: int
    ub: Optional[Memref] = None   # the UB side, where its layout is static

    @property
    def bytes(self) -> int:
        return self.memref.elements * self.memref.itemsize

    @property
    def burst_bytes(self) -> int:
        """Bytes of one packet: the global side's unit-stride run, cut at the UB side's where
        the UB rows are padded (each row lands in its own 32-byte-aligned slot)."""
        run = self.memref.burst
        if self.ub is not None and self.ub.shape and None not in self.ub.shape \
                and None not in self.ub.strides:
            run = min(run, self.ub.burst)
        return run * self.memref.itemsize

    @property
    def innermost_stride(self) -> Optional[int]:
        return self.memref.strides[-1] if self.memref.strides else 1


@dataclasses.dataclass
class TileBody:
    label: str
    vector_ops: List[VectorOp] = dataclasses.field(default_factory=list)
    transfers: List[Transfer] = dataclasses.field(default_factory=list)
    scalar_gm_accesses: int = 0   # scalar loads/stores of global memory, per tile
    scalar_ub_accesses: int = 0   # of the UB
    barriers: int = 0
    flags: int = 0

    @property
    def vector_calls(self) -> int:
        return sum(op.calls for op in self.vector_ops)

    @property
    def row_loop_calls(self) -> int:
        return sum(op.calls for op in self.vector_ops if op.in_row_loop)

    def bytes(self, direction: str) -> int:
        return sum(t.bytes * t.calls for t in self.transfers if t.direction == direction)


@dataclasses.dataclass
class Hivm:
    spec: Dict[str, int]          # the target's dlti spec: VECTOR_CORE_COUNT, UB_SIZE (bits)...
    bodies: List[TileBody]

    @property
    def tile(self) -> TileBody:
        """What a full tile does: the tile loop's body, or where it branches, the branch with
        the most vector calls, then DMA bytes (a last, masked tile after the loop runs once per
        call: not this)."""
        loop = [b for b in self.bodies if b.label.startswith("tile loop")] or self.bodies
        return max(loop, key=lambda b: (b.vector_calls, b.bytes("in") + b.bytes("out")))


_SPEC = re.compile(r'#dlti\.dl_entry<"(\w+)", (\d+) : i32>')
_MEMREF = re.compile(r"memref<([^,>]*?)(?:, strided<\[([^\]]*)\][^>]*>)?"
                     r"(?:, #hivm\.address_space<(\w+)>)?>")
_DEF = re.compile(r"^\s*(%[\w.]+)(?::\d+)? = ")
_CALL = re.compile(r"\bcall @(\w+)\(([^)]*)\)")
_CONST_FOR = re.compile(r"scf\.for %\w+ = %c(\d+)(?:_\w+)? to %c(\d+)(?:_\w+)? "
                        r"step %c(\d+)(?:_\w+)? ")


def parse_memref(text: str) -> Optional[Memref]:
    match = _MEMREF.search(text)
    if not match:
        return None
    *dims, dtype = match.group(1).split("x")
    shape = tuple(None if d == "?" else int(d) for d in dims)
    if match.group(2) is not None:
        strides = tuple(None if s.strip() == "?" else int(s) for s in match.group(2).split(","))
    else:  # contiguous
        strides, step = [], 1
        for d in reversed(shape):
            strides.append(step)
            step *= d or 1
        strides = tuple(reversed(strides))
    return Memref(shape, dtype, strides, match.group(3) or "")


def read(hivm: str) -> Hivm:
    """The target spec and the tile bodies of a final HIVM module (see the module docstring)."""
    if "hivm.vector_function" in hivm:
        return _read_register_based(hivm)
    spec = {name: int(value) for name, value in _SPEC.findall(hivm)}
    types: Dict[str, Memref] = {}
    bodies: Dict[Tuple[str, int], TileBody] = {}
    # Open regions: (kind, trip count of a constant-bound loop, body key it belongs to)
    stack: List[Tuple[str, int, Optional[Tuple[str, int]]]] = []
    in_entry, entry_depth, tile_loop_seen, branches = False, 0, False, 0
    shared: List[Tuple[str, int]] = []   # tile-loop statements outside its branches
    for line in hivm.splitlines():
        stripped = line.strip()
        if not in_entry:
            if stripped.startswith("func.func @") and "hacc.entry" in line:
                in_entry, entry_depth = True, len(stack) + 1
                stack.append(("func", 1, None))
            continue
        _record_type(line, types)
        closes, opens = stripped.startswith("}"), stripped.endswith("{")
        if closes:
            kind, _, _ = stack.pop()
            if len(stack) < entry_depth:
                break
        if opens:
            depth = len(stack) - entry_depth  # 0: directly in the entry function
            parent_key = stack[-1][2] if stack else None
            if depth == 0 and "scf.for" in line and not _CONST_FOR.search(line) \
                    and not tile_loop_seen:
                tile_loop_seen = True
                key = ("tile", 0)
            elif depth == 0 and ("scf.if" in line or closes):  # a branch outside the loop
                key = ("last tile", len(bodies))
            elif depth == 1 and parent_key and parent_key[0] == "tile" \
                    and ("scf.if" in line or closes):
                branches += 1
                key = ("tile", branches)
            else:
                key = parent_key
            trip = _trip(line) if key == parent_key else 1
            stack.append(("region", trip, key))
            if key is not None and key not in bodies:
                bodies[key] = TileBody(_label(key))
            continue
        key = stack[-1][2] if stack else None
        if key is None:
            continue
        repeat = math.prod(trip for _, trip, k in stack if k == key)
        _read_statement(line, bodies[key], types, repeat, in_row_loop=repeat > 1)
        if key == ("tile", 0):
            shared.append((line, repeat))
    tile_bodies = [b for k, b in bodies.items() if k[0] == "tile" and k[1] > 0]
    for body in tile_bodies:  # each branch also does what the loop body does around it
        for line, repeat in shared:
            _read_statement(line, body, types, repeat, in_row_loop=repeat > 1)
    if tile_bodies:
        bodies.pop(("tile", 0), None)
    return Hivm(spec, list(bodies.values()))


def _label(key: Tuple[str, int]) -> str:
    kind, index = key
    if kind == "tile":
        return "tile loop" if index == 0 else f"tile loop, branch {index}"
    return "last tile"


def _trip(line: str) -> int:
    match = _CONST_FOR.search(line)
    if not match:
        return 1
    low, high, step = (int(v) for v in match.groups())
    return max(0, -(-(high - low) // max(step, 1)))


def _record_type(line: str, types: Dict[str, Memref]) -> None:
    """The static memref type of the value a line defines (a ``memref.cast``'s source type:
    the cast only erases it)."""
    defined = _DEF.match(line)
    if not defined or "memref<" not in line:
        return
    if "memref.cast " in line:
        source = re.search(r"memref\.cast (%[\w.]+)", line).group(1)
        memref = types.get(source) or parse_memref(line.split(" : ", 1)[1])
    else:
        memref = parse_memref(line[line.rfind("memref<"):])
    if memref is not None:
        types[defined.group(1)] = memref


def _read_statement(line: str, body: TileBody, types: Dict[str, Memref], repeat: int,
                    in_row_loop: bool) -> None:
    if "hivm.hir.pipe_barrier" in line:
        body.barriers += repeat
    elif "hivm.hir.set_flag" in line or "hivm.hir.wait_flag" in line:
        body.flags += repeat
    elif "memref.load " in line or "memref.store " in line:
        if "address_space<gm>" in line:
            body.scalar_gm_accesses += repeat
        else:
            body.scalar_ub_accesses += repeat
    elif call := _CALL.search(line):
        name, args = call.group(1), [a.strip() for a in call.group(2).split(",")]
        memrefs = [types[a] for a in args if a in types]
        if name.startswith("load_gm_to_ubuf") and memrefs:
            body.transfers.append(Transfer("in", memrefs[0], repeat,
                                           memrefs[1] if len(memrefs) > 1 else None))
        elif name.startswith("store_ubuf_to_gm") and len(memrefs) > 1:
            body.transfers.append(Transfer("out", memrefs[1], repeat, memrefs[0]))
        elif memrefs and all(m.space == "ub" for m in memrefs):
            # Its repeats are counted on its first data operand (a mask is not one), a cast's
            # on its source (REFERENCE.md section 9), another op's at its widest operand.
            data = [m for m in memrefs if m.dtype != "i1"] or memrefs
            itemsize = data[0].itemsize if "cast" in name else max(m.itemsize for m in data)
            body.vector_ops.append(VectorOp(name, data[0].elements, data[0].span * itemsize,
                                            itemsize, repeat, in_row_loop))


# --- the register-based form (Ascend 950) ------------------------------------------------

_INTRINSIC = re.compile(r'"hivm_regbaseintrins\.intr\.hivm\.([\w.]+)"\(.*\) : '
                        r'\((?:vector<(\d+)x(\w+)>)?')
_BLOCK = re.compile(r"^\s*\^(bb\d+)")
_BRANCH_TARGETS = re.compile(r"\^(bb\d+)")
_VF_CALL = re.compile(r"\bcall @(\w+)\(.*\{hivm\.vector_function")
# Not vector work: register loads and stores (the UB accesses), mask generation, set-up.
_NOT_COMPUTE = ("vld", "vst", "p", "init.")


def _blocks(lines: List[str]) -> List[Tuple[str, List[str]]]:
    """A function body's blocks in order: (label, lines); the entry block is ``bb_entry``."""
    blocks = [("bb_entry", [])]
    for line in lines:
        label = _BLOCK.match(line)
        if label:
            blocks.append((label.group(1), []))
        else:
            blocks[-1][1].append(line)
    return blocks


def _loop_depths(blocks: List[Tuple[str, List[str]]]) -> List[int]:
    """How many loops hold each block: a branch to an earlier (or the same) block closes a
    loop from that block to this one."""
    index = {label: i for i, (label, _) in enumerate(blocks)}
    depths = [0] * len(blocks)
    for i, (_, lines) in enumerate(blocks):
        for line in lines:
            if "cf.br" not in line and "cf.cond_br" not in line:
                continue
            for target in _BRANCH_TARGETS.findall(line):
                if index.get(target, len(blocks)) <= i:
                    for j in range(index[target], i + 1):
                        depths[j] += 1
    return depths


def _functions(hivm: str) -> Dict[str, Tuple[str, List[str]]]:
    """Each defined function: name -> (its ``func.func`` line, its body lines)."""
    functions: Dict[str, Tuple[str, List[str]]] = {}
    current = None
    for line in hivm.splitlines():
        if line.startswith("  func.func "):
            name = re.search(r"@(\w+)", line).group(1)
            current = None if line.rstrip().endswith(")") or "private" in line else name
            if current:
                functions[current] = (line, [])
        elif line.startswith("  }"):
            current = None
        elif current:
            functions[current][1].append(line)
    return functions


def _vector_function_ops(lines: List[str]) -> List[VectorOp]:
    """The compute intrinsics in a vector function's loops (at any depth), once each per
    call."""
    ops = []
    blocks = _blocks(lines)
    for (_, body), depth in zip(blocks, _loop_depths(blocks)):
        for line in body:
            match = _INTRINSIC.search(line)
            if not match or depth == 0 or match.group(1).startswith(_NOT_COMPUTE):
                continue
            lanes, dtype = int(match.group(2) or 1), match.group(3) or "f32"
            itemsize = ITEMSIZE.get(dtype, 4)
            ops.append(VectorOp(match.group(1), lanes, lanes * itemsize, itemsize, 1,
                                in_row_loop=False))
    return ops


def _read_register_based(hivm: str) -> Hivm:
    spec = {name: int(value) for name, value in _SPEC.findall(hivm)}
    functions = _functions(hivm)
    vector_functions = {name: _vector_function_ops(lines)
                        for name, (header, lines) in functions.items()
                        if "hivm.vector_function" in header}
    entry = next((lines for header, lines in functions.values() if "hacc.entry" in header), [])
    types: Dict[str, Memref] = {}
    tile, last = TileBody("tile loop (both sides of its branches)"), TileBody("last tile")
    header, body = None, None
    for line in entry:
        _record_type(line, types)
        label = _BLOCK.match(line)
        if label and header is None:
            header, body = label.group(1), tile
            continue
        if body is tile and re.search(rf"cf\.(?:cond_)?br .*\^{header}\b", line):
            body = last   # the branch back to the loop's header: what follows runs once
            continue
        if body is None:
            continue
        call = _VF_CALL.search(line)
        if call:
            body.vector_ops += vector_functions.get(call.group(1), [])
        else:
            _read_statement(line, body, types, 1, in_row_loop=False)
    bodies = [tile] + ([last] if last.transfers or last.vector_ops else [])
    return Hivm(spec, bodies)
