"""The 950 series' vector functions (``ave.hir`` register ops) as upstream MLIR, for ``hivm_exec``.

On the 950 (``bishengir-compile-a5``) the planned HIVM keeps the DMAs and the UB plan in
``hivm.hir`` (translated by ``hivm_exec`` as on A2/A3), but each tile's arithmetic is outlined
into *vector functions* (``hivm.vector_function``): ``scf.for`` loops over UB subviews whose
bodies load 256-byte registers, compute under lane masks and store them back. This module
translates one such function line by line into the upstream ``vector``, ``arith`` and
``memref`` dialects, modelling each register **physically**: 256 bytes, so a 32-bit vector is
``vector<64xT>``, a 16-bit one ``vector<128xT>`` even where the op's type says
``vector<64xbf16>`` (``element_alignment_bit_width = 32``: one 16-bit element in the low, even,
half of each 32-bit slot). Lanes that an op leaves undefined (masked off, the odd halves an
unpacking load or a narrowing cast does not write) hold NaN bits: a store that writes one shows.

Every op and attribute is checked against ``SEMANTICS``; anything else raises
``hivm_exec.UnknownHivm``. Huawei documents these ops only in figures (the Atlas 350
"Interleave"/"DeInterleave" pages); each entry says what is assumed and why.
"""

import re
from typing import Dict, List, Tuple

REGISTER_BYTES = 256
_BITS = {"f32": 32, "i32": 32, "f16": 16, "bf16": 16, "i16": 16, "i1": 1}
_NAN = {"f32": "0xFFFFFFFF", "f16": "0xFFFF", "bf16": "0xFFFF"}   # every bit set: a NaN
FLAT_ELEMENTS = 1 << 22   # a flat view's nominal size (the UB pool bounds every access)

SEMANTICS: Dict[str, Tuple[str, str]] = {
    "registers": ("256 bytes; a 16-bit vector at element_alignment_bit_width 32 holds element i "
                  "in the low (even) half of 32-bit slot i", "the ops' types (vector<64xbf16> "
                  "with 32-bit alignment) and the part_even casts that read them"),
    "pge <ALL> / <VLn>": ("a mask of every lane / of the first n lanes; a pb32 mask has one lane "
                          "per 32-bit slot (covering both halves of a 16-bit slot pair), pb16 "
                          "one per 16-bit element", "the functionType pb32/pb16 and the lane "
                          "counts of the vectors each mask is used with"),
    "vload NORM / masked_store NORM_B32, NORM_B16": (
        "contiguous elements, one per lane, at the view's element (masked lanes only, on store)",
        "distribution 'norm'"),
    "vload NORM / masked_store NORM_B8 of an i1 vector": (
        "a mask spilled to an i1 UB buffer and read back: lane k to or from bit k (the "
        "planner gives a 4096xi1 buffer 512 bytes; only the vector functions touch it)",
        "the planned offsets; hivm_exec's bit pool models i1 buffers one bit per element"),
    "vload UNPK_B16 / masked_store PK_B32": (
        "aligned: element i to or from the low half of 32-bit slot i (unpack / pack); with "
        "ave.unaligned_ub_access: a packed stream of 16-bit elements (no unpacking), which the "
        "compiler always pairs with vintlv after the load and vdintlv before the store",
        "inferred: the only reading under which the compiler's aligned form (no interleave) and "
        "its unaligned form (interleave pairs) compute the same thing"),
    "vload BRC_B16 / BRC_B32": ("one element broadcast to every lane", "distribution 'brc'"),
    "masked_store ONEPT_B32": ("lane 0 only (one point)", "'onept'; used with a <VL1> mask"),
    "vintlv a, b": ("16- or 32-bit elements: first result a0 b0 a1 b1 ... of the low halves, "
                    "second of the high halves", "inferred: Atlas 350 'Interleave' figure (32-bit: "
                    "the same lane order assumed; the rows moved flat use it)"),
    "vdintlv a, b": ("of the 256 16-bit elements a||b: the even ones, then the odd ones",
                     "inferred: Atlas 350 'DeInterleave' figure"),
    "vextf <part_even>": ("f16/bf16 -> f32 exact, of the even 16-bit elements", "IEEE 754"),
    "vtruncf <rint>, false, <part_even>": (
        "f32 -> f16/bf16 round to nearest even, into the even 16-bit elements (the odd ones "
        "undefined)", "round mode rint; IEEE 754"),
    "vadd vsub vmul vmuls vabs": ("IEEE float ops per lane (vmuls: by a scalar); integer vmuls "
                                  "wraps; masked-off lanes undefined", "IEEE 754"),
    "vcmp <EQ|NE|LT|GT|LE|GE>": ("IEEE ordered predicates (false on NaN; NE unordered), false in "
                                 "masked-off lanes; on a 16-bit vector with a 32-bit-lane mask: "
                                 "the even elements", "assumed, as on A2/A3"),
    "vsel m, a, b": ("m ? a : b per lane (a 32-bit-lane mask covers both 16-bit halves)",
                     "operand order, as on A2/A3"),
    "broadcast / scalar_broadcast": ("the scalar in every element", "the ops' types"),
    "vci s, <INCREASE>": ("s, s+1, s+2, ... per lane", "the INCREASE attribute"),
    "vgather view[i..] [idx], m": ("lane k = the element idx[k] (in elements) past view[i..], "
                                   "masked-off lanes undefined", "inferred: every index vector "
                                   "is vci x the view's row stride in elements"),
}

_ATTRS = re.compile(r"\{([^{}]*)\}")
_ALLOWED_ATTRS = re.compile(
    r"^(element_alignment_bit_width = (16|32) : i32|functionType = #ave\.func_dist_type<\w+>|"
    r"mask_op_idx = \d+ : i32|ave\.unaligned_ub_access = #ave\.unaligned_ub_access|"
    r"hivm\.is_continuous)$")
_DEFINED = re.compile(r"^(%[\w]+(?:, %[\w]+)*) = ")
_VECTOR = re.compile(r"vector<(\d+)x(\w+)>")
_MEMREF_TYPE = re.compile(r"memref<((?:\d+x)*)(\w+)(.*)>$")


class VectorFunction:
    """Translates the lines of one vector function; ``line`` returns the upstream lines for
    one, raising ``UnknownHivm`` on anything ``SEMANTICS`` does not cover."""

    def __init__(self, unknown):
        self.unknown = unknown
        self.types: Dict[str, str] = {}   # SSA value -> physical vector type
        self.aliases: Dict[str, str] = {}  # an op's result -> the value that computed it
        self.full_masks: set = set()
        self.count = 0

    # helpers ------------------------------------------------------------------------------

    def fresh(self) -> str:
        self.count += 1
        return f"%av{self.count}"

    def physical(self, logical: str, alignment: int) -> str:
        match = _VECTOR.fullmatch(logical)
        if not match:
            raise self.unknown(f"not a vector type: {logical}")
        lanes, element = int(match.group(1)), match.group(2)
        if element == "i1":
            return logical
        bits = _BITS.get(element)
        if bits is None or lanes * max(bits, alignment) != REGISTER_BYTES * 8:
            raise self.unknown(f"a register of {logical} at {alignment}-bit alignment")
        return f"vector<{REGISTER_BYTES * 8 // bits}x{element}>"

    @staticmethod
    def shape(vector_type: str) -> Tuple[int, str]:
        match = _VECTOR.fullmatch(vector_type)
        return int(match.group(1)), match.group(2)

    def undefined(self, vector_type: str, out: List[str]) -> str:
        lanes, element = self.shape(vector_type)
        value = self.fresh()
        if element in _NAN:
            bits = self.fresh()
            integer = f"vector<{lanes}xi{_BITS[element]}>"
            out += [f"{bits} = arith.constant dense<-1> : {integer}",
                    f"{value} = arith.bitcast {bits} : {integer} to {vector_type}"]
        else:
            out.append(f"{value} = arith.constant dense<-1> : {vector_type}")
        return value

    def widen_mask(self, mask: str, lanes: int, out: List[str]) -> str:
        """A mask over ``lanes`` elements: a 32-bit-lane mask covers both 16-bit halves."""
        have, _ = self.shape(self.types[mask])
        if have == lanes:
            return mask
        if lanes != 2 * have:
            raise self.unknown(f"a {have}-lane mask on {lanes} elements")
        value = self.fresh()
        order = ", ".join(str(i // 2) for i in range(lanes))
        out.append(f"{value} = vector.shuffle {mask}, {mask} [{order}] : "
                   f"vector<{have}xi1>, vector<{have}xi1>")
        self.types[value] = f"vector<{lanes}xi1>"
        return value

    def masked(self, value: str, mask: str, out: List[str]) -> str:
        """``value`` where ``mask`` holds, undefined elsewhere."""
        vector_type = self.types[value]
        lanes, _ = self.shape(vector_type)
        mask = self.widen_mask(mask, lanes, out)
        result = self.fresh()
        out.append(f"{result} = arith.select {mask}, {value}, "
                   f"{self.undefined(vector_type, out)} : vector<{lanes}xi1>, {vector_type}")
        self.types[result] = vector_type
        return result

    def halves(self, value: str, even: bool, out: List[str]) -> str:
        """The even (or odd) elements of a 16-bit register: 64 of 128."""
        lanes, element = self.shape(self.types[value])
        result = self.fresh()
        order = ", ".join(str(i) for i in range(0 if even else 1, lanes, 2))
        out.append(f"{result} = vector.shuffle {value}, {value} [{order}] : "
                   f"{self.types[value]}, {self.types[value]}")
        self.types[result] = f"vector<{lanes // 2}x{element}>"
        return result

    def spread(self, value: str, out: List[str]) -> str:
        """64 16-bit elements into the even elements of a register (the odd ones undefined)."""
        lanes, element = self.shape(self.types[value])
        filler = self.undefined(self.types[value], out)
        result = self.fresh()
        order = ", ".join(f"{i}, {lanes + i}" for i in range(lanes))
        out.append(f"{result} = vector.shuffle {value}, {filler} [{order}] : "
                   f"{self.types[value]}, {self.types[value]}")
        self.types[result] = f"vector<{2 * lanes}x{element}>"
        return result

    def flat(self, memref: str, memref_type: str, index_text: str,
             out: List[str]) -> Tuple[str, str, str]:
        """A 1-D view from the memref's base and the element index of ``memref[index_text]``
        (the op's comma-separated indices)."""
        indices = [index.strip() for index in index_text.split(",")]
        match = _MEMREF_TYPE.match(memref_type)
        if not match:
            raise self.unknown(f"not a memref type: {memref_type}")
        rank = max(1, match.group(1).count("x"))
        element = match.group(2)
        if len(indices) != rank:
            raise self.unknown(f"{len(indices)} indices into {memref_type}")
        base, offset = self.fresh(), self.fresh()
        sizes = [self.fresh() for _ in range(rank)]
        strides = [self.fresh() for _ in range(rank)]
        out.append(f"{base}, {offset}, {', '.join(sizes)}, {', '.join(strides)} = "
                   f"memref.extract_strided_metadata {memref} : {memref_type} -> "
                   f"memref<{element}>, index{', index' * (2 * rank)}")
        view = self.fresh()
        out.append(f"{view} = memref.reinterpret_cast {base} to offset: [0], sizes: "
                   f"[{FLAT_ELEMENTS}], strides: [1] : memref<{element}> to "
                   f"memref<{FLAT_ELEMENTS}x{element}>")
        position = offset
        for index, stride in zip(indices, strides):
            product, total = self.fresh(), self.fresh()
            out += [f"{product} = arith.muli {index}, {stride} : index",
                    f"{total} = arith.addi {position}, {product} : index"]
            position = total
        return view, position, f"memref<{FLAT_ELEMENTS}x{element}>"

    # ops ----------------------------------------------------------------------------------

    def substitute(self, line: str) -> str:
        """``line`` with every aliased operand replaced by what computed it. A name the line
        defines ends its alias: sibling regions reuse names."""
        indent = line[:len(line) - len(line.lstrip())]
        text = line.strip()
        defined = _DEFINED.match(text)
        head = defined.group(0) if defined else ""
        for name in re.findall(r"%[\w]+", head):
            self.aliases.pop(name, None)
        rest = re.sub(r"%[\w]+", lambda m: self.aliases.get(m.group(0), m.group(0)),
                      text[len(head):])
        return indent + head + rest

    def line(self, line: str) -> List[str]:
        indent = line[:len(line) - len(line.lstrip())]
        text = self.substitute(line).strip()
        attrs_text = _ATTRS.search(text)
        attrs = [a.strip() for a in attrs_text.group(1).split(",")] if attrs_text else []
        for attr in attrs:
            if not _ALLOWED_ATTRS.match(attr):
                raise self.unknown(f"ave.hir attribute {attr!r}: {text[:160]}")
        alignment = int(next((a.split("=")[1].split(":")[0] for a in attrs
                              if a.startswith("element_alignment")), "32"))
        unaligned = any(a.startswith("ave.unaligned_ub_access") for a in attrs)
        head, _, types = (text[:attrs_text.start()] + text[attrs_text.end():]).partition(" : ") \
            if attrs_text else text.partition(" : ")
        match = re.match(r"^(?:(%[\w]+(?:, %[\w]+)*) = )?ave\.hir\.(\w+)\s*(.*)$", head.strip())
        if not match:
            raise self.unknown(f"not an ave.hir op: {text[:160]}")
        results = match.group(1).split(", ") if match.group(1) else []
        name, operands = match.group(2), match.group(3).strip()
        out: List[str] = []
        handler = getattr(self, f"op_{name}", None)
        if handler is None:
            raise self.unknown(f"ave.hir.{name}")
        handler(results, operands, types.strip(), alignment, unaligned, out)
        return [indent + entry for entry in out]

    def op_pge(self, results, operands, types, alignment, unaligned, out):
        lanes, _ = self.shape(types)
        pattern = re.fullmatch(r"<(ALL|VL(\d+))>", operands)
        if not pattern:
            raise self.unknown(f"pge {operands}")
        count = lanes if pattern.group(1) == "ALL" else int(pattern.group(2))
        out.append(f"{results[0]} = vector.constant_mask [{count}] : {types}")
        self.types[results[0]] = types
        if count == lanes:
            self.full_masks.add(results[0])

    def _broadcast(self, result, scalar, logical, alignment, out):
        physical = self.physical(logical, alignment)
        out.append(f"{result} = vector.broadcast {scalar} : "
                   f"{self.shape(physical)[1]} to {physical}")
        self.types[result] = physical

    def op_broadcast(self, results, operands, types, alignment, unaligned, out):
        scalar, mask = [o.strip() for o in operands.split(",")]
        logical = types.split("->")[1].strip()
        self._broadcast(results[0], scalar, logical, alignment, out)
        if self.shape(self.types[mask])[0] != self.shape(logical)[0] or \
                mask not in self.full_masks:
            raise self.unknown(f"broadcast under a partial mask: {operands}")

    def op_scalar_broadcast(self, results, operands, types, alignment, unaligned, out):
        self._broadcast(results[0], operands, types.split("->")[1].strip(), alignment, out)

    def op_vci(self, results, operands, types, alignment, unaligned, out):
        start, mode = [o.strip() for o in operands.split(",")]
        if mode != "<INCREASE>":
            raise self.unknown(f"vci {mode}")
        logical = types.split(",")[1].strip()
        physical = self.physical(logical, alignment)
        lanes, element = self.shape(physical)
        steps, base, result = self.fresh(), self.fresh(), results[0]
        out += [f"{steps} = arith.constant dense<[{', '.join(map(str, range(lanes)))}]> : "
                f"{physical}",
                f"{base} = vector.broadcast {start} : {element} to {physical}",
                f"{result} = arith.addi {base}, {steps} : {physical}"]
        self.types[result] = physical

    def op_vload(self, results, operands, types, alignment, unaligned, out):
        pattern = re.fullmatch(r"<(\w+)> (%[\w]+)\[([^\]]*)\]", operands)
        if not pattern:
            raise self.unknown(f"vload {operands}")
        mode, memref, indices = pattern.groups()
        memref_type, logical = [t.strip() for t in types.split(" into ")]
        view, position, view_type = self.flat(memref, memref_type,
                                              indices, out)
        physical = self.physical(logical, alignment)
        lanes, element = self.shape(physical)
        result = results[0]
        if mode in ("BRC_B16", "BRC_B32") and _BITS[element] == int(mode[-2:]):
            scalar = self.fresh()
            out += [f"{scalar} = memref.load {view}[{position}] : {view_type}",
                    f"{result} = vector.broadcast {scalar} : {element} to {physical}"]
        elif mode == "NORM" and (_BITS[element] == alignment or element == "i1"):
            out.append(f"{result} = vector.load {view}[{position}] : {view_type}, {physical}")
        elif mode == "UNPK_B16" and _BITS[element] == 16 and alignment == 32:
            if unaligned:   # a packed stream: vintlv unpacks it
                out.append(f"{result} = vector.load {view}[{position}] : {view_type}, "
                           f"{physical}")
            else:
                packed = self.fresh()
                out.append(f"{packed} = vector.load {view}[{position}] : {view_type}, "
                           f"vector<{lanes // 2}x{element}>")
                self.types[packed] = f"vector<{lanes // 2}x{element}>"
                self._rename(result, self.spread(packed, out))
                return
        else:
            raise self.unknown(f"vload <{mode}> into {logical} at {alignment}-bit alignment")
        self.types[result] = physical

    def op_masked_store(self, results, operands, types, alignment, unaligned, out):
        pattern = re.fullmatch(r"<(\w+)> (%[\w]+)\[([^\]]*)\], (%[\w]+), (%[\w]+)", operands)
        if not pattern:
            raise self.unknown(f"masked_store {operands}")
        mode, memref, indices, mask, value = pattern.groups()
        memref_type = types.rsplit(", vector", 2)[0].strip()
        view, position, view_type = self.flat(memref, memref_type,
                                              indices, out)
        lanes, element = self.shape(self.types[value])
        mask_lanes, _ = self.shape(self.types[mask])
        if mode == "ONEPT_B32" and _BITS[element] == 32:
            scalar = self.fresh()
            out += [f"{scalar} = vector.extract {value}[0] : {element} from {self.types[value]}",
                    f"memref.store {scalar}, {view}[{position}] : {view_type}"]
            return
        one_per_lane = (mode in ("NORM_B32", "NORM_B16") and _BITS[element] == int(mode[-2:])
                        or mode == "NORM_B8" and element == "i1")  # a spilled mask
        if one_per_lane and mask_lanes == lanes:
            stored = value
        elif mode == "PK_B32" and _BITS[element] == 16 and mask_lanes == lanes // 2:
            if unaligned:   # vdintlv packed it: the stream's first elements, one per lane
                stored = self.fresh()
                out.append(f"{stored} = vector.extract_strided_slice {value} {{offsets = [0], "
                           f"sizes = [{mask_lanes}], strides = [1]}} : {self.types[value]} to "
                           f"vector<{mask_lanes}x{element}>")
                self.types[stored] = f"vector<{mask_lanes}x{element}>"
            else:
                stored = self.halves(value, True, out)
        else:
            raise self.unknown(f"masked_store <{mode}> of {self.types[value]} under a "
                               f"{mask_lanes}-lane mask")
        out.append(f"vector.maskedstore {view}[{position}], {mask}, {stored} : {view_type}, "
                   f"{self.types[mask]}, {self.types[stored]}")

    def op_vextf(self, results, operands, types, alignment, unaligned, out):
        value, part, mask = [o.strip() for o in operands.split(",")]
        target = types.split(",")[1].strip()
        if part != "<part_even>" or self.shape(self.types[value])[0] != 128:
            raise self.unknown(f"vextf {part} of {self.types[value]}")
        even = self.halves(value, True, out)
        wide = self.fresh()
        out.append(f"{wide} = arith.extf {even} : {self.types[even]} to {target}")
        self.types[wide] = target
        self._rename(results[0], self.masked(wide, mask, out))

    def op_vtruncf(self, results, operands, types, alignment, unaligned, out):
        parts = [o.strip() for o in operands.split(",")]
        if len(parts) != 5 or parts[1:4] != ["<rint>", "false", "<part_even>"]:
            raise self.unknown(f"vtruncf {operands}")
        value, mask = parts[0], parts[4]
        narrow_type = types.split(",")[1].strip()
        lanes, element = self.shape(narrow_type)
        masked = self.masked(value, mask, out)
        narrow = self.fresh()
        out.append(f"{narrow} = arith.truncf {masked} : {self.types[value]} to "
                   f"vector<{lanes}x{element}>")
        self.types[narrow] = f"vector<{lanes}x{element}>"
        self._rename(results[0], self.spread(narrow, out))

    def _rename(self, result: str, value: str) -> None:
        """``result`` (the op's own name) stands for ``value`` from here on."""
        self.aliases[result] = value
        self.types[result] = self.types[value]

    def _elementwise(self, results, operands, types, op_float, op_int, scalar: bool, out,
                     arity: int = 2):
        parts = [o.strip() for o in operands.split(",")]
        *inputs, mask = parts
        if len(inputs) != arity:
            raise self.unknown(f"{arity} inputs expected: {operands}")
        vector_type = self.types[inputs[0]]
        element = self.shape(vector_type)[1]
        if scalar:
            broadcast = self.fresh()
            out.append(f"{broadcast} = vector.broadcast {inputs[1]} : {element} to "
                       f"{vector_type}")
            inputs[1] = broadcast
        op = op_float if element in _NAN else op_int
        if op is None:
            raise self.unknown(f"{operands} on {element}")
        value = self.fresh()
        out.append(f"{value} = {op} {', '.join(inputs)} : {vector_type}")
        self.types[value] = vector_type
        self._rename(results[0], self.masked(value, mask, out))

    def op_vsub(self, results, operands, types, alignment, unaligned, out):
        self._elementwise(results, operands, types, "arith.subf", None, False, out)

    def op_vadd(self, results, operands, types, alignment, unaligned, out):
        self._elementwise(results, operands, types, "arith.addf", None, False, out)

    def op_vmul(self, results, operands, types, alignment, unaligned, out):
        self._elementwise(results, operands, types, "arith.mulf", None, False, out)

    def op_vmuls(self, results, operands, types, alignment, unaligned, out):
        self._elementwise(results, operands, types, "arith.mulf", "arith.muli", True, out)

    def op_vabs(self, results, operands, types, alignment, unaligned, out):
        self._elementwise(results, operands, types, "math.absf", None, False, out, arity=1)

    def op_vcmp(self, results, operands, types, alignment, unaligned, out):
        pattern = re.fullmatch(r"<(\w+)> (%[\w]+), (%[\w]+), (%[\w]+)", operands)
        predicates = {"EQ": "oeq", "NE": "une", "LT": "olt", "GT": "ogt", "LE": "ole",
                      "GE": "oge"}
        if not pattern or pattern.group(1) not in predicates:
            raise self.unknown(f"vcmp {operands}")
        mode, a, b, mask = pattern.groups()
        mask_lanes, _ = self.shape(self.types[mask])
        if self.shape(self.types[a])[0] == 2 * mask_lanes:   # a 16-bit vector in 32-bit slots
            a, b = self.halves(a, True, out), self.halves(b, True, out)
        compared = self.fresh()
        out.append(f"{compared} = arith.cmpf {predicates[mode]}, {a}, {b} : {self.types[a]}")
        out.append(f"{results[0]} = arith.andi {compared}, {mask} : {self.types[mask]}")
        self.types[results[0]] = self.types[mask]

    def op_vsel(self, results, operands, types, alignment, unaligned, out):
        mask, a, b = [o.strip() for o in operands.split(",")]
        vector_type = self.types[a]
        mask = self.widen_mask(mask, self.shape(vector_type)[0], out)
        out.append(f"{results[0]} = arith.select {mask}, {a}, {b} : {self.types[mask]}, "
                   f"{vector_type}")
        self.types[results[0]] = vector_type

    def op_vintlv(self, results, operands, types, alignment, unaligned, out):
        a, b = [o.strip() for o in operands.split(",")]
        vector_type = self.types[a]
        lanes = self.shape(vector_type)[0]
        for result, start in zip(results, (0, lanes // 2)):
            order = ", ".join(f"{start + i}, {lanes + start + i}" for i in range(lanes // 2))
            out.append(f"{result} = vector.shuffle {a}, {b} [{order}] : {vector_type}, "
                       f"{vector_type}")
            self.types[result] = vector_type

    def op_vdintlv(self, results, operands, types, alignment, unaligned, out):
        a, b = [o.strip() for o in operands.split(",")]
        vector_type = self.types[a]
        lanes = self.shape(vector_type)[0]
        for result, start in zip(results, (0, 1)):
            order = ", ".join(str(i) for i in range(start, 2 * lanes, 2))
            out.append(f"{result} = vector.shuffle {a}, {b} [{order}] : {vector_type}, "
                       f"{vector_type}")
            self.types[result] = vector_type

    def op_vgather(self, results, operands, types, alignment, unaligned, out):
        pattern = re.fullmatch(r"(%[\w]+)\[([^\]]*)\] \[(%[\w]+)\], (%[\w]+)", operands)
        if not pattern:
            raise self.unknown(f"vgather {operands}")
        memref, indices, offsets, mask = pattern.groups()
        memref_type = types.split(", vector")[0].strip()
        logical = types.split(" into ")[1].strip()
        view, position, view_type = self.flat(memref, memref_type,
                                              indices, out)
        physical = self.physical(logical, alignment)
        if self.shape(self.types[offsets])[0] != self.shape(physical)[0] or \
                self.shape(self.types[mask])[0] != self.shape(physical)[0]:
            raise self.unknown(f"vgather of {logical} with {self.types[offsets]}")
        out.append(f"{results[0]} = vector.gather {view}[{position}] [{offsets}], {mask}, "
                   f"{self.undefined(physical, out)} : {view_type}, {self.types[offsets]}, "
                   f"{self.types[mask]}, {physical} into {physical}")
        self.types[results[0]] = physical
