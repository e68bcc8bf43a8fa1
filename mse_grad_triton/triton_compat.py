"""The one module that touches Triton's internals, for both compilers the project supports.

triton-ascend (3.2) and upstream Triton (3.9) install the same ``triton`` module but differ
below the public ``kernel[grid](...)`` API: how a call is bound and specialised, how an
``ASTSource`` is built and turned into IR, what a compiled kernel's launcher takes. The Ascend
and CUDA compile gates, the fast launch path and the tests use only the functions here, so an
upgrade of either compiler changes this file and nothing else.

    FLAVOUR             "ascend" or "upstream"
    check_supported()   RuntimeError unless this Triton's internals are ones this file knows
    specialise()        the ASTSource Triton's JIT would compile for ``kernel[grid](*args)``
    make_ir(), compile()
    launch_values()     a call's arguments as a compiled kernel's launcher takes them
    prepare_launch()    launch a compiled kernel directly, without the JIT's per-call work
"""

import importlib.util
from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

import triton

from . import triton_install

FLAVOUR = "ascend" if importlib.util.find_spec("triton.backends.ascend") else "upstream"
VERSION: Tuple[int, int] = triton_install.release(triton.__version__)
# The internals below are written against these releases (CI tests triton-ascend 3.2 and
# upstream 3.9; `./run test-upstream 3.8` the other).
KNOWN_VERSIONS = triton_install.SUPPORTED


def is_supported() -> bool:
    """Are this Triton's internals ones this module was written against?"""
    return VERSION in KNOWN_VERSIONS[FLAVOUR]


def check_supported() -> None:
    """``RuntimeError`` naming the installed Triton, and how to install a supported one,
    unless ``is_supported()``."""
    if not is_supported():
        known = ", ".join(".".join(map(str, v)) for v in KNOWN_VERSIONS[FLAVOUR])
        name = "triton-ascend" if FLAVOUR == "ascend" else "upstream Triton"
        raise RuntimeError(f"mse_grad_triton supports {name} {known}, but {name} "
                           f"{triton.__version__} is installed.\n"
                           f"{triton_install.repair_advice()}")


def target(kind: str, arch: Any):
    """A compile target: ``target("npu", "Ascend910B3")``, ``target("cuda", 90)``."""
    from triton.backends.compiler import GPUTarget

    return GPUTarget(kind, arch, 32 if kind == "cuda" else 0)


@dataclass
class Specialisation:
    """What Triton's JIT would compile for one call: the source, the compiler backend, the
    compile options."""

    source: Any             # triton.compiler.ASTSource
    backend: Any            # the compiler backend (triton.backends.*.compiler)
    options: Any            # backend.parse_options(...) result
    target: Any


def specialise(kernel, args: Sequence, constexprs: Dict[str, Any], compile_target,
               launch_options: Optional[Dict[str, Any]] = None) -> Specialisation:
    """The ``ASTSource`` Triton's JIT builds for ``kernel[grid](*args, **constexprs,
    **launch_options)`` on ``compile_target``: the same binder, signature, specialisation
    (16-byte pointer alignment, integers equal to 1 or divisible by 16) and constants.
    Needs no device: meta tensors stand in for real ones."""
    check_supported()
    from triton.compiler import make_backend
    from triton.compiler.compiler import ASTSource

    backend = make_backend(compile_target)
    kwargs = {**constexprs, **(launch_options or {})}
    if FLAVOUR == "ascend":
        if kernel.binder is None:
            kernel.create_binder(backend)
        bound_args, sig_and_spec, *_ = kernel.binder(*args, **kwargs)
        values = tuple(bound_args.values())
        keys = [kernel.params[i].name for i in kernel.non_constexpr_indices]
        signature = dict(zip(keys, sig_and_spec[:len(keys)]))
        attrs = backend.get_attrs_descriptor(kernel.params, values)
        constant_params = attrs.get_constants()
        constants = {p.name: v for v, p in zip(values, kernel.params)
                     if p.is_constexpr or p.num in constant_params or v is None}
        source = ASTSource(kernel, signature, constants, attrs)
        options = backend.parse_options(launch_options or {})
    else:
        from triton.runtime.jit import create_function_from_signature

        binder = create_function_from_signature(kernel.signature, kernel.params, backend)
        bound_args, specialization, bound_options = binder(*args, **kwargs)
        options, signature, constants, attrs = kernel._pack_args(
            backend, kwargs, bound_args, specialization, bound_options)
        source = ASTSource(kernel, signature, constants, attrs)
    return Specialisation(source, backend, options, compile_target)


def specialisation_key(spec: Specialisation) -> str:
    """A string that differs exactly when two specialisations compile differently."""
    return repr((spec.source.signature, sorted(spec.source.constants.items(), key=str),
                 str(spec.source.attrs)))


def make_ir(spec: Specialisation):
    """Triton IR (before any pass) of a specialisation."""
    from triton._C.libtriton import ir

    context = ir.context()
    ir.load_dialects(context)
    spec.backend.load_dialects(context)
    module_map = spec.backend.get_module_map()
    if FLAVOUR == "ascend":
        codegen = spec.backend.get_codegen_implementation()
        return spec.source.make_ir(spec.options, codegen, module_map, context)
    codegen = spec.backend.get_codegen_implementation(spec.options)
    return spec.source.make_ir(spec.target, spec.options, codegen, module_map, context)


def compile(spec: Specialisation):  # noqa: A001  (Triton's own name for it)
    """Compile a specialisation through every stage (no device needed)."""
    return triton.compile(spec.source, target=spec.target, options=spec.options.__dict__)


def ascend_ttir(spec: Specialisation):
    """triton-ascend's TTIR (after its TTIR passes), with the metadata its later stages need."""
    from triton.backends.ascend import compiler as ascend_compiler

    metadata = {"hash": "ascend-check", "target": spec.backend.target, **spec.options.__dict__}
    return ascend_compiler.make_ttir(make_ir(spec), metadata, spec.options), metadata


def ascend_linalg(ttir, spec: Specialisation, metadata) -> str:
    """triton-adapter-opt's lowering of TTIR to Linalg/HIVM, as triton-ascend runs it."""
    from triton.backends.ascend import compiler as ascend_compiler

    return ascend_compiler.ttir_to_linalg(ttir, metadata, spec.options, named_ops=True)


# --- launching a compiled kernel directly ------------------------------------------------

def launch_values(kernel, args: Sequence, constexprs: Dict[str, Any]) -> Tuple:
    """``args`` (positional, in the kernel's order, constexprs excluded) as the compiled
    kernel's launcher takes them: upstream Triton passes every argument, constexprs
    included; triton-ascend only the non-constexpr ones."""
    if FLAVOUR == "ascend":
        return tuple(args)
    names = [p.name for p in kernel.params]
    return tuple(args) + tuple(constexprs[name] for name in names[len(args):])


if FLAVOUR == "ascend":
    from triton.compiler.compiler import CompiledKernel as _HookHolder

    _ENTER, _EXIT = "launch_enter_hook", "launch_exit_hook"
else:
    from triton import knobs as _knobs

    _HookHolder, _ENTER, _EXIT = _knobs.runtime, "launch_enter_hook", "launch_exit_hook"


def hooks_installed() -> bool:
    """Has someone installed Triton launch hooks (a profiler)? Then launches go through the
    JIT, which computes the metadata the hooks are given."""
    # Upstream keeps hooks in a HookChain (its ``calls`` list); triton-ascend a callable or None.
    enter, leave = getattr(_HookHolder, _ENTER), getattr(_HookHolder, _EXIT)
    return bool(getattr(enter, "calls", enter) or getattr(leave, "calls", leave))


def prepare_launch(compiled) -> Callable[[int, int, Tuple], None]:
    """``launch(num_programs, stream, values)`` for a compiled kernel on a 1-D grid: what
    ``kernel[grid](...)`` does after its binder, specialisation and cache lookup (callers
    check ``hooks_installed`` first: no hook is called).

    Upstream Triton's launcher wraps its C launch in Python that allocates scratch memory;
    a kernel that needs none (ours) calls the C launch directly.
    """
    run = compiled.run
    function, metadata = compiled.function, compiled.packed_metadata
    if (FLAVOUR == "upstream" and VERSION in ((3, 8), (3, 9)) and hasattr(run, "arg_annotations")
            and not (run.global_scratch_size or run.profile_scratch_size or run.gsan_enabled)
            and getattr(compiled.metadata, "tensordesc_meta", None) is None):
        c_launch, cooperative, pdl = run.launch, run.launch_cooperative_grid, run.launch_pdl
        annotations, signature = run.arg_annotations, run.kernel_signature

        def launch(num_programs, stream, values):
            c_launch(num_programs, 1, 1, stream, function, cooperative, pdl, metadata, None,
                     None, None, None, None, annotations, signature, values)
        return launch

    def launch(num_programs, stream, values):
        run(num_programs, 1, 1, stream, function, metadata, None, None, None, *values)
    return launch


def stream_getter() -> Callable[[int], int]:
    """``get(device_index) -> raw current stream``, as Triton's JIT reads it (looked up once:
    the driver's proxy is slow to resolve on every call)."""
    from triton.runtime import driver

    return driver.active.get_current_stream


def compiled_variants(kernel) -> int:
    """How many specialisations Triton's JIT has compiled of ``kernel`` (all devices)."""
    if FLAVOUR == "ascend":
        return sum(len(cache) for cache in kernel.cache.values())
    return sum(len(caches[0]) for caches in kernel.device_caches.values())
