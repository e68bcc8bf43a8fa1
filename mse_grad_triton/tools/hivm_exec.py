"""Run what Huawei's compiler produced: a kernel's UB-planned HIVM, executed on the CPU.

bishengir-compile's last form before codegen is plain MLIR (``--mlir-print-ir-before=
convert-hivm-to-std``: after memory planning, multi-buffering and sync insertion). This module
turns it into upstream MLIR and runs it:

1. every ``hivm.hir.pointer_cast(<byte offset>)`` becomes a view into one UB-sized byte pool at
   its planned offset (``i1`` buffers into a bit pool, one byte per bit, at offset x 8), so the
   planner's buffer reuse and aliasing is what runs; GM<->UB ``load``/``store`` become copies;
   the block index becomes an argument (one call per program); sync ops are dropped (the
   execution is sequential);
2. each HIVM vector op becomes a ``linalg.generic`` with the semantics of ``SEMANTICS`` (an op
   or attribute the table does not know fails loudly: ``UnknownHivm``);
3. ``mlir-opt-19`` (upstream lowering passes), ``mlir-translate-19`` and ``llc-19`` (Debian's
   ``mlir-19-tools`` and ``llvm-19``) and the C compiler make a shared object;
4. each program is called through ctypes over torch tensors, the UB pool filled with NaN bytes
   before each (a program that reads what it did not write shows).

What this cannot see: a missing or wrong sync (execution is sequential), hivmc's own code, the
NPU's real op semantics (``SEMANTICS`` says what is assumed and where from). On the 950
series the tile's arithmetic is planned into vector functions of register ops (``ave.hir``):
``ave_exec`` translates those, this module the rest.

    planned_hivm(...)            bishengir-compile's planned HIVM for a kernel (cached)
    translate(planned, ub_bytes) upstream MLIR
    build(mlir, cache)           a shared object (cached by content)
    execute(...)                 every program, in order
"""

import ctypes
import dataclasses
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch

from . import ave_exec

# The Debian packages the route needs (pinned in .ci/run), and their commands.
PACKAGES = ("mlir-19-tools", "llvm-19")
TOOLS = {"mlir-opt": "mlir-opt-19", "mlir-translate": "mlir-translate-19", "llc": "llc-19",
         "cc": "cc"}
_SPACE = re.compile(r", #hivm\.address_space<\w+>")
_OP = re.compile(r"^(\s*)hivm\.hir\.(\w+) ins\((.*?) : (.*?)\) outs\((.*?) : (.*?)\)(.*)$")
_MEMREF = re.compile(r"memref<((?:\d+|\?)(?:x(?:\d+|\?))*)x(\w+)")
_FLOATS = {"f16": 16, "bf16": 16, "f32": 32, "f64": 64}

# What each HIVM construct is taken to mean, and where that comes from. bishengir-opt's
# generic form (--mlir-print-op-generic) shows every attribute with its default.
SEMANTICS: Dict[str, Tuple[str, str]] = {
    "pointer_cast": ("a view of the UB at the planned byte offset; i1 buffers: a bit pool, one "
                     "byte per bit, at offset x 8", "hivm-plan-memory's output; REFERENCE.md §8"),
    "load / store": ("an element-wise copy GM->UB / UB->GM between the ins and outs views "
                     "(left_padding_num must be the constant 0; init_out_buffer false; "
                     "eviction_policy, a cache hint, changes no value)",
                     "the ops' operands; padding other than 0 is refused"),
    "vadd vsub vmul vdiv": ("IEEE float add/sub/mul/div (round to nearest even), per element; "
                            "an operand of size 1 in a dimension broadcasts along it; a scalar "
                            "operand (f32) applies to every element",
                            "assumed: IEEE 754 binary ops; broadcast = [] in the generic form"),
    "vmax vmin": ("arith.maximumf / minimumf (NaN propagates)", "assumed: not documented"),
    "vabs": ("|x| (clears the sign bit)", "assumed: IEEE 754 abs"),
    "vnot": ("of an i1 mask: each element flipped (other types refused)",
             "assumed: logical not; the compiler inverts a broadcast mask with it"),
    "vcmp": ("compare_mode eq, ne, lt, gt, le, ge (default eq, from the generic form) as IEEE "
             "ordered predicates (oeq, olt, ...: false on NaN), ne as unordered (une: true on "
             "NaN); one i1 per element", "assumed: IEEE 754 comparisons"),
    "vsel": ("ins(mask, a, b): mask ? a : b per element (the temp_buffer is scratch)",
             "the op's operand order"),
    "vcast": ("f16/bf16 -> f32 exact; f32 -> f16/bf16 round to nearest even (round_mode = rint, "
              "the default in the generic form); i1 -> float 1.0 / 0.0, exact under any "
              "round_mode (a broadcast i1 mask is cast with <trunc>); broadcast and transpose "
              "must be []", "round_mode attribute; IEEE 754 conversions"),
    "vbrc": ("a scalar written to every element; a memref of size 1 along broadcast_dims "
             "repeated along them", "the op's operands and broadcast_dims"),
    "vtranspose": ("out[i_0..] = in[i_perm...] for permutation", "the permutation attribute"),
    "vinterleave": ("interleave_channel_nums = 2, 1-D: out[2i] = a[i], out[2i + 1] = b[i] (the "
                    "temp_buffer is scratch)", "the Triton ops it lowers (tt.join, tt.reshape: "
                    "tl.interleave); other channel counts and ranks are refused"),
    "vdeinterleave": ("channel_num = 2, index_mode = <CHANNEL_0> or <CHANNEL_1>, 1-D: out[i] = "
                      "in[2i] or in[2i + 1]", "the Triton ops it lowers (tt.reshape, tt.split: "
                      "the first of each pair for CHANNEL_0); other channel counts and ranks "
                      "are refused"),
    "get_block_idx": ("the program's index (one call per program)", "triton-ascend's grid"),
    "set_flag wait_flag pipe_barrier set_mask_norm set_ctrl": (
        "dropped: the execution is sequential", "what this layer cannot check"),
}

# The kinds of trailing attribute text an op may carry, and what is accepted of each.
_ALLOWED_TAIL = re.compile(
    r"^(\s*(compare_mode = <\w+>|temp_buffer\([^)]*\)|permutation = \[[\d, ]+\]|"
    r"init_out_buffer = false|may_implicit_transpose_with_last_axis = false|"
    r"core_type = <VECTOR>|eviction_policy = <Evict\w+>|left_padding_num = %c0(_\d+)? : index|"
    r"interleave_channel_nums = 2|channel_num = 2|index_mode = <CHANNEL_[01]>|"
    r"broadcast(_dims)? = \[[\d, ]*\]))*\s*$")


class UnknownHivm(ValueError):
    """An HIVM op or attribute whose semantics ``SEMANTICS`` does not give."""


def missing_tools() -> List[str]:
    """The commands of ``TOOLS`` not on ``$PATH`` (install: ``apt-get install mlir-19-tools
    llvm-19``)."""
    return [command for command in TOOLS.values() if shutil.which(command) is None]


# --- bishengir-compile's planned HIVM -------------------------------------------------------

_DUMP = "// -----// IR Dump Before ConvertHIVMToStandard (convert-hivm-to-std) //----- //"


def planned_from_log(log: str) -> str:
    """The (first) planned module of a ``--mlir-print-ir-before=convert-hivm-to-std`` run."""
    if _DUMP not in log:
        raise UnknownHivm("bishengir-compile printed no planned HIVM")
    text = log[log.index(_DUMP) + len(_DUMP):]
    if _DUMP in text:
        text = text[:text.index(_DUMP)]
    return text[:text.rindex("\n}") + 2].strip() + "\n"


# --- translation ----------------------------------------------------------------------------

def _split(text: str) -> List[str]:
    """Split at top-level commas (types nest <...>)."""
    parts, depth, current = [], 0, ""
    for char in text:
        depth += char in "<([{"
        depth -= char in ">)]}"
        if char == "," and depth == 0:
            parts.append(current.strip())
            current = ""
        else:
            current += char
    return parts + ([current.strip()] if current.strip() else [])


def _shape(memref: str) -> Tuple[List[str], str]:
    match = _MEMREF.match(memref)
    if not match:
        raise UnknownHivm(f"not a memref type: {memref}")
    return match.group(1).split("x"), match.group(2)


@dataclasses.dataclass
class _Translator:
    ub_bytes: int
    count: int = 0

    def fresh(self) -> str:
        self.count += 1
        return f"%hx{self.count}"

    def generic(self, indent: str, ins, in_types, outs, out_types,
                body: Callable[[List[Tuple[str, str]], str], Tuple[List[str], str]],
                maps: Optional[List[str]] = None) -> List[str]:
        """A ``linalg.generic`` over the memref operands; scalar operands are used directly."""
        out_shape, out_element = _shape(out_types[0])
        rank = len(out_shape)
        dims = ", ".join(f"d{i}" for i in range(rank))
        identity = f"affine_map<({dims}) -> ({dims})>"
        memrefs = [(v, t) for v, t in zip(ins, in_types) if t.startswith("memref")]
        if maps is None:  # an input of size 1 where the output is larger broadcasts along it
            maps = []
            for _, memref in memrefs:
                shape = _shape(memref)[0]
                if len(shape) != rank:
                    raise UnknownHivm(f"an operand of rank {len(shape)} for rank {rank}")
                exprs = ["0" if d == "1" and o != "1" else f"d{i}"
                         for i, (d, o) in enumerate(zip(shape, out_shape))]
                maps.append(f"affine_map<({dims}) -> ({', '.join(exprs)})>")
            maps += [identity] * len(outs)
        values, arguments, k = [], [], 0
        for value, type_ in zip(ins, in_types):
            if type_.startswith("memref"):
                element = _shape(type_)[1]
                values.append((f"%in{k}", element))
                arguments.append(f"%in{k}: {element}")
                k += 1
            else:
                values.append((value, type_))
        arguments.append(f"%out: {out_element}")
        lines, result = body(values, out_element)
        iterators = ", ".join(['"parallel"'] * rank)
        head = (f"{indent}linalg.generic {{indexing_maps = [{', '.join(maps)}], "
                f"iterator_types = [{iterators}]}} ")
        if memrefs:
            head += (f"ins({', '.join(v for v, _ in memrefs)} : "
                     f"{', '.join(t for _, t in memrefs)}) ")
        head += f"outs({', '.join(outs)} : {', '.join(out_types)}) {{"
        return [head, f"{indent}^bb0({', '.join(arguments)}):",
                *(f"{indent}  {line}" for line in lines),
                f"{indent}  linalg.yield {result} : {out_element}", f"{indent}}}"]

    # per-element bodies ---------------------------------------------------------------

    def copy(self, values, element):
        return [], values[0][0]

    def binary(self, op: str):
        float_ops = {"vadd": "arith.addf", "vsub": "arith.subf", "vmul": "arith.mulf",
                     "vdiv": "arith.divf", "vmax": "arith.maximumf", "vmin": "arith.minimumf"}

        def body(values, element):
            if element not in _FLOATS:
                raise UnknownHivm(f"{op} on {element}")
            (a, _), (b, _) = values
            result = self.fresh()
            return [f"{result} = {float_ops[op]} {a}, {b} : {element}"], result
        return body

    def logical_not(self, values, element):
        """``vnot`` of a mask: each i1 flipped (other element types are refused)."""
        (a, source) = values[0]
        if source != "i1" or element != "i1":
            raise UnknownHivm(f"vnot on {source}")
        true, result = self.fresh(), self.fresh()
        return [f"{true} = arith.constant true", f"{result} = arith.xori {a}, {true} : i1"], \
            result

    def absolute(self, values, element):
        result = self.fresh()
        return [f"{result} = math.absf {values[0][0]} : {values[0][1]}"], result

    def compare(self, mode: str):
        predicates = {"eq": "oeq", "ne": "une", "lt": "olt", "gt": "ogt", "le": "ole",
                      "ge": "oge"}
        if mode not in predicates:
            raise UnknownHivm(f"vcmp compare_mode {mode}")

        def body(values, element):
            (a, type_), (b, _) = values
            result = self.fresh()
            return [f"{result} = arith.cmpf {predicates[mode]}, {a}, {b} : {type_}"], result
        return body

    def interleaved(self, values, element):
        """The body of a 1-D ``vinterleave`` of two inputs: the even lanes from the first."""
        (a, _), (b, _) = values
        lane, two, zero, parity, even, result = (self.fresh() for _ in range(6))
        return [f"{lane} = linalg.index 0 : index", f"{two} = arith.constant 2 : index",
                f"{zero} = arith.constant 0 : index",
                f"{parity} = arith.remui {lane}, {two} : index",
                f"{even} = arith.cmpi eq, {parity}, {zero} : index",
                f"{result} = arith.select {even}, {a}, {b} : {element}"], result

    def select(self, values, element):
        (mask, _), (a, _), (b, _) = values[:3]
        result = self.fresh()
        return [f"{result} = arith.select {mask}, {a}, {b} : {element}"], result

    def cast(self, values, element):
        (a, source), result = values[0], self.fresh()
        if source == "i1" and element in _FLOATS:
            return [f"{result} = arith.uitofp {a} : i1 to {element}"], result
        if source in _FLOATS and element in _FLOATS and source != element:
            op = "arith.extf" if _FLOATS[element] > _FLOATS[source] else "arith.truncf"
            if _FLOATS[element] == _FLOATS[source]:
                raise UnknownHivm(f"vcast {source} -> {element}")
            return [f"{result} = {op} {a} : {source} to {element}"], result
        raise UnknownHivm(f"vcast {source} -> {element}")

    # statements -----------------------------------------------------------------------

    def op(self, line: str) -> List[str]:
        match = _OP.match(line)
        indent, name, ins, in_types, outs, out_types, tail = match.groups()
        ins, in_types = _split(ins), _split(in_types)
        outs, out_types = _split(outs), _split(out_types)
        if name == "vcast" and _shape(in_types[0])[1] == "i1":  # 0 or 1: exact in any mode
            tail = re.sub(r"\s*round_mode = <\w+>", "", tail)
        if not _ALLOWED_TAIL.match(tail):
            raise UnknownHivm(f"hivm.hir.{name}: attributes {tail.strip()!r}")
        if name == "vsel":  # the temp_buffer is scratch
            ins, in_types = ins[:3], in_types[:3]
        self.check_broadcast(name, tail, in_types, out_types)
        if name in ("load", "store", "vbrc"):
            return self.generic(indent, ins, in_types, outs, out_types, self.copy)
        if name in ("vadd", "vsub", "vmul", "vdiv", "vmax", "vmin"):
            return self.generic(indent, ins, in_types, outs, out_types, self.binary(name))
        if name == "vabs":
            return self.generic(indent, ins, in_types, outs, out_types, self.absolute)
        if name == "vnot":
            return self.generic(indent, ins, in_types, outs, out_types, self.logical_not)
        if name == "vcmp":
            mode = re.search(r"compare_mode = <(\w+)>", tail)
            return self.generic(indent, ins, in_types, outs, out_types,
                                self.compare(mode.group(1) if mode else "eq"))
        if name == "vsel":
            return self.generic(indent, ins, in_types, outs, out_types, self.select)
        if name == "vcast":
            return self.generic(indent, ins, in_types, outs, out_types, self.cast)
        if name == "vinterleave":
            if len(ins) != 2 or len(_shape(out_types[0])[0]) != 1:
                raise UnknownHivm(f"hivm.hir.vinterleave of {len(ins)} inputs, "
                                  f"{out_types[0]}")
            half = "affine_map<(d0) -> (d0 floordiv 2)>"
            return self.generic(indent, ins, in_types, outs, out_types, self.interleaved,
                                maps=[half, half, "affine_map<(d0) -> (d0)>"])
        if name == "vdeinterleave":
            channel = re.search(r"index_mode = <CHANNEL_([01])>", tail)
            if (len(ins) != 1 or "channel_num = 2" not in tail or channel is None
                    or len(_shape(out_types[0])[0]) != 1):
                raise UnknownHivm(f"hivm.hir.vdeinterleave {tail.strip()!r}, {out_types[0]}")
            pick = f"affine_map<(d0) -> (d0 * 2 + {channel.group(1)})>"
            return self.generic(indent, ins, in_types, outs, out_types, self.copy,
                                maps=[pick, "affine_map<(d0) -> (d0)>"])
        if name == "vtranspose":
            permutation = [int(p) for p in
                           re.search(r"permutation = \[([\d, ]+)\]", tail).group(1).split(",")]
            dims = [f"d{i}" for i in range(len(permutation))]
            inverse = [permutation.index(i) for i in range(len(permutation))]
            source = f"affine_map<({', '.join(dims)}) -> ({', '.join(dims[p] for p in inverse)})>"
            identity = f"affine_map<({', '.join(dims)}) -> ({', '.join(dims)})>"
            return self.generic(indent, ins, in_types, outs, out_types, self.copy,
                                maps=[source, identity])
        raise UnknownHivm(f"hivm.hir.{name}")

    @staticmethod
    def check_broadcast(name: str, tail: str, in_types, out_types) -> None:
        """``broadcast = [dims]`` names the dimensions an input of size 1 is broadcast along:
        ``generic`` broadcasts exactly those; anything else is refused."""
        listed = re.search(r"broadcast(?:_dims)? = \[([\d, ]*)\]", tail)
        dims = {int(d) for d in listed.group(1).split(",") if d.strip()} if listed else set()
        out_shape = _shape(out_types[0])[0]
        implied = {i for t in in_types if t.startswith("memref")
                   for i, (d, o) in enumerate(zip(_shape(t)[0], out_shape)) if d == "1" != o}
        if implied - dims or (dims - implied and any(out_shape[d] != "1" for d in dims - implied)):
            raise UnknownHivm(f"hivm.hir.{name}: broadcast = {sorted(dims)} but operands "
                              f"broadcast along {sorted(implied)}")

    def pointer_cast(self, indent: str, result: str, offset: str, type_: str) -> List[str]:
        element = _shape(type_)[1]
        index = self.fresh()
        if element == "i1":
            bits = self.fresh()
            return [f"{indent}{bits} = arith.muli {offset}, %hx_c8 : i64",
                    f"{indent}{index} = arith.index_cast {bits} : i64 to index",
                    f"{indent}{result} = memref.view %hx_bits[{index}][] : "
                    f"memref<{self.ub_bytes * 8}xi8> to {type_}"]
        return [f"{indent}{index} = arith.index_cast {offset} : i64 to index",
                f"{indent}{result} = memref.view %hx_pool[{index}][] : "
                f"memref<{self.ub_bytes}xi8> to {type_}"]


_DROPPED = ("hivm.hir.set_flag", "hivm.hir.wait_flag", "hivm.hir.pipe_barrier",
            "hivm.hir.set_mask_norm", "hivm.hir.set_ctrl")
_CONSTANT = re.compile(r"^\s*(%c\w*) = arith\.constant (-?\d+) : i64$")


def translate(planned: str, ub_bytes: int,
              misplace: Optional[Tuple[int, int]] = None) -> Tuple[str, str]:
    """The planned HIVM module as upstream MLIR, and its entry function's name. The entry
    takes the kernel's own arguments, then the UB pool, the bit pool and the block index.
    ``misplace=(a, b)``: the negative control, every buffer planned at byte ``a`` moved to
    ``b``."""
    translator = _Translator(ub_bytes)
    start = planned.index("module")
    aliases = [line for line in planned[:start].splitlines() if line.startswith("#")]
    lines = planned[start:].splitlines()
    out, entry, skipping = ["module {"], None, False
    constants: Dict[str, int] = {}
    vector_function: Optional[ave_exec.VectorFunction] = None
    for line in lines[1:]:
        stripped = line.strip()
        if skipping:
            skipping = not line.startswith("  }")
            continue
        if vector_function is not None:   # inside a 950 vector function
            out += _vector_function_line(vector_function, line)
            if line.startswith("  }"):
                vector_function = None
            continue
        if line.startswith("  func.func") and "hivm.vector_function" in line:
            vector_function = ave_exec.VectorFunction(UnknownHivm)
            out.append(_SPACE.sub("", re.sub(r" attributes \{.*\} \{$", " {", line)))
            continue
        if line.startswith("  func.func"):
            if "hacc.entry" not in line:
                skipping = not stripped.endswith("}")
                continue
            entry = re.search(r"@(\w+)", line).group(1)
            signature = line[line.index("(") + 1:line.index(") attributes")]
            arguments = [_SPACE.sub("", re.sub(r" \{[^{}]*\}$", "", a)) for a in _split(signature)]
            arguments += [f"%hx_pool: memref<{ub_bytes}xi8>",
                          f"%hx_bits: memref<{ub_bytes * 8}xi8>", "%hx_block: i64"]
            out += [f"  func.func @{entry}({', '.join(arguments)}) attributes "
                    "{llvm.emit_c_interface} {", "    %hx_c8 = arith.constant 8 : i64"]
            continue
        line = _SPACE.sub("", line)
        indent = line[:len(line) - len(line.lstrip())]
        stripped = line.strip()
        constant = _CONSTANT.match(line)
        if constant:
            constants[constant.group(1)] = int(constant.group(2))
        if stripped.startswith(_DROPPED):
            continue
        block = re.match(r"(%\w+) = hivm\.hir\.get_block_idx -> i64$", stripped)
        cast = re.match(r"(%\w+) = hivm\.hir\.pointer_cast\((%\w+)\) : (memref<.*>)$", stripped)
        if block:
            out.append(f"{indent}{block.group(1)} = arith.addi %hx_block, %hx_zero : i64")
            out.insert(out.index("    %hx_c8 = arith.constant 8 : i64") + 1,
                       "    %hx_zero = arith.constant 0 : i64")
        elif cast:
            result, offset, type_ = cast.groups()
            if misplace and constants.get(offset) == misplace[0]:
                moved = translator.fresh()
                out.append(f"{indent}{moved} = arith.constant {misplace[1]} : i64")
                offset = moved
            out += translator.pointer_cast(indent, result, offset, type_)
        elif _OP.match(line):
            out += translator.op(line)
        elif _UNIT_COLLAPSE.match(stripped):
            out.append(indent + _unit_collapse_as_subview(stripped))
        elif _VECTOR_CALL.search(line):
            out.append(_VECTOR_CALL.sub(" :", line))
        elif "hivm." in stripped or "hacc." in stripped:
            raise UnknownHivm(f"not translated: {stripped[:200]}")
        else:
            out.append(line)
    if entry is None:
        raise UnknownHivm("no entry function (hacc.entry)")
    return "\n".join(aliases + out) + "\n", entry


# A collapse of a leading unit dimension whose stride is not the next one's extent (a row of a
# larger buffer): bishengir's MLIR accepts it, upstream MLIR 19's verifier refuses it (a
# stepped slice's row): the same view as a rank-reducing subview.
_UNIT_COLLAPSE = re.compile(r"(%\w+) = memref\.collapse_shape (%\w+) \[\[0, 1\]\] : "
                            r"(memref<1x(\d+)x(\w+), strided<\[\d+, 1\](?:, offset: [?\d]+)?>>) "
                            r"into (memref<\d+x\w+, strided<\[1\](?:, offset: [?\d]+)?>>)$")


def _unit_collapse_as_subview(line: str) -> str:
    result, source, source_type, size, _, result_type = _UNIT_COLLAPSE.match(line).groups()
    return (f"{result} = memref.subview {source}[0, 0] [1, {size}] [1, 1] : {source_type} to "
            f"{result_type}")


_VECTOR_CALL = re.compile(r" \{hivm\.vector_function(, no_inline|, ptc_simdvf)*\} :")


def _vector_function_line(function: "ave_exec.VectorFunction", line: str) -> List[str]:
    """One line of a 950 vector function: its register ops translated, the rest (loops,
    subviews, constants) upstream MLIR already."""
    line = _SPACE.sub("", line)
    if "ave.hir." in line:
        return function.line(line)
    if "hivm." in line or "hacc." in line or "ave." in line:
        raise UnknownHivm(f"not translated in a vector function: {line.strip()[:200]}")
    return [function.substitute(line)]


def planned_offsets(planned: str) -> List[int]:
    """The distinct byte offsets the plan puts buffers at (for the negative control)."""
    constants = dict(re.findall(r"(%c\w*) = arith\.constant (-?\d+) : i64", planned))
    used = re.findall(r"hivm\.hir\.pointer_cast\((%\w+)\) : memref<[^>]*x(?!i1)\w+", planned)
    return sorted({int(constants[name]) for name in used if name in constants})


# --- building -------------------------------------------------------------------------------

_LOWERING = ("--lower-affine", "--convert-linalg-to-loops", "--convert-scf-to-cf",
             "--arith-expand=include-bf16=true", "--expand-strided-metadata", "--lower-affine",
             "--convert-vector-to-llvm", "--finalize-memref-to-llvm", "--convert-math-to-llvm",
             "--convert-arith-to-llvm",
             "--convert-index-to-llvm", "--convert-func-to-llvm", "--convert-cf-to-llvm",
             "--reconcile-unrealized-casts")
_COLLAPSED = re.compile(r":(\d+):\d+: error: 'memref.collapse_shape' op expected collapsed "
                        r"type to be '(.*?)' but found '(.*?)'")


def _verified(mlir: str, folder: Path) -> str:
    """``mlir`` as upstream MLIR verifies it: where bishengir's collapse_shape result layout
    differs from upstream's (static against dynamic strides), upstream's own expected type
    is taken and cast back to bishengir's."""
    source = folder / "kernel.mlir"
    for _ in range(10000):
        source.write_text(mlir)
        run = subprocess.run([TOOLS["mlir-opt"], str(source), "-o", os.devnull],
                             capture_output=True, text=True)
        if run.returncode == 0:
            return mlir
        match = _COLLAPSED.search(run.stderr)
        if not match:
            raise UnknownHivm(f"upstream MLIR refuses the translation: {run.stderr[:600]}")
        number, expected, found = int(match.group(1)), match.group(2), match.group(3)
        lines = mlir.splitlines()
        line = lines[number - 1]
        result = re.match(r"\s*(%[\w.]+) = ", line).group(1)
        indent = line[:len(line) - len(line.lstrip())]
        head = line.rsplit(" into ", 1)[0].replace(f"{result} = ", f"{result}_up = ", 1)
        lines[number - 1:number] = [f"{head} into {expected}",
                                   f"{indent}{result} = memref.cast {result}_up : {expected} "
                                   f"to {found}"]
        mlir = "\n".join(lines) + "\n"
    raise UnknownHivm("too many collapse_shape layouts to reconcile")


def build(mlir: str, cache: Optional[Path] = None) -> Path:
    """A shared object of ``mlir`` (cached in ``cache`` by its digest and the tools)."""
    digest = hashlib.sha256(("\n".join(_LOWERING) + mlir).encode()).hexdigest()[:32]
    if cache is not None:
        built = cache / f"{digest}.so"
        if built.is_file():
            return built
    folder = Path(tempfile.mkdtemp(prefix="hivm-exec-"))
    source = folder / "kernel.mlir"
    source.write_text(_verified(mlir, folder))
    steps = [[TOOLS["mlir-opt"], str(source), *_LOWERING, "-o", str(folder / "kernel.llvm.mlir")],
             [TOOLS["mlir-translate"], "--mlir-to-llvmir", str(folder / "kernel.llvm.mlir"),
              "-o", str(folder / "kernel.ll")],
             [TOOLS["llc"], "-O2", "-filetype=obj", "-relocation-model=pic",
              str(folder / "kernel.ll"), "-o", str(folder / "kernel.o")],
             [TOOLS["cc"], "-shared", "-o", str(folder / "kernel.so"), str(folder / "kernel.o")]]
    for step in steps:
        run = subprocess.run(step, capture_output=True, text=True)
        if run.returncode:
            raise UnknownHivm(f"{Path(step[0]).name} failed: {run.stderr[:600]}")
    if cache is None:
        return folder / "kernel.so"
    cache.mkdir(parents=True, exist_ok=True)
    partial = cache / f".{digest}.{os.getpid()}.so"
    shutil.copy(folder / "kernel.so", partial)
    os.replace(partial, cache / f"{digest}.so")
    shutil.rmtree(folder, ignore_errors=True)
    return cache / f"{digest}.so"


# --- running --------------------------------------------------------------------------------

class _Descriptor(ctypes.Structure):
    """A rank-1 memref descriptor (MLIR's C interface)."""

    _fields_ = [("allocated", ctypes.c_void_p), ("aligned", ctypes.c_void_p),
                ("offset", ctypes.c_int64), ("size", ctypes.c_int64),
                ("stride", ctypes.c_int64)]


def _descriptor(tensor: torch.Tensor) -> _Descriptor:
    """The whole storage of ``tensor`` from its first element (the kernel indexes it with the
    strides it was given)."""
    elements = tensor.untyped_storage().nbytes() // tensor.element_size() - tensor.storage_offset()
    return _Descriptor(tensor.data_ptr(), tensor.data_ptr(), 0, max(1, elements), 1)


_SCALARS = {"fp32": ctypes.c_float, "i32": ctypes.c_int32, "i64": ctypes.c_int64,
            "fp64": ctypes.c_double}


def execute(library: Path, entry: str, arguments: Sequence[Tuple[str, object]],
            num_programs: int, ub_bytes: int) -> None:
    """Call the kernel once per program, in order. ``arguments``: the kernel's own (Triton
    signature type, value) after specialisation, tensors for pointers; the grid is
    ``(num_programs, 1, 1)``."""
    function = getattr(ctypes.CDLL(str(library)), "_mlir_ciface_" + entry)
    # A register load at the UB's end reads up to a register past it (masked lanes).
    pool = torch.empty(ub_bytes + ave_exec.REGISTER_BYTES, dtype=torch.uint8)
    bits = torch.empty(ub_bytes * 8, dtype=torch.uint8)
    unused = torch.zeros(64, dtype=torch.uint8)   # the sync-lock and workspace arguments
    keep = []
    values: List[object] = [ctypes.c_int64(0)]
    for tensor in (unused, unused):
        keep.append(_descriptor(tensor))
        values.append(ctypes.pointer(keep[-1]))
    for type_, value in arguments:
        if isinstance(value, torch.Tensor):
            keep.append(_descriptor(value))
            values.append(ctypes.pointer(keep[-1]))
        elif type_ in _SCALARS:
            values.append(_SCALARS[type_](value))
        else:
            raise UnknownHivm(f"an argument of type {type_}")
    values += [ctypes.c_int32(num_programs), ctypes.c_int32(1), ctypes.c_int32(1)]
    pools = [_descriptor(pool), _descriptor(bits)]
    for program in range(num_programs):
        pool.fill_(0xFF)   # NaN in every float format: reading an unwritten byte shows
        bits.fill_(0x01)
        function(*values, ctypes.pointer(pools[0]), ctypes.pointer(pools[1]),
                 ctypes.c_int64(program))
