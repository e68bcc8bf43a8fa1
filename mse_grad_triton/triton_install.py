"""Which Triton is installed, read from its files before ``import triton``.

triton-ascend and upstream Triton install the same ``triton`` folder. Where both were installed
(torch's Linux wheels pull in upstream Triton, so ``pip install torch`` and then triton-ascend
does it), the folder mixes the two: triton-ascend's backend discovery then loads upstream's
``backends/amd`` and fails deep inside ``import triton``, and pip reports no conflict. This
module names such an installation, and says how to repair it, before anything imports it.

    check()          ImportError with the repair commands unless one Triton is installed whole
    problem()        what is wrong with the installed ``triton``, or None
    repair_commands() the commands that leave one Triton: triton-ascend, or upstream Triton
"""

import importlib.metadata
import importlib.util
import re
import sys
from pathlib import Path
from typing import Dict, Optional

ASCEND_DISTRIBUTION, UPSTREAM_DISTRIBUTION = "triton-ascend", "triton"
# The releases (major, minor) whose internals triton_compat knows, and the one to install.
SUPPORTED = {"ascend": ((3, 2),), "upstream": ((3, 8), (3, 9))}
RECOMMENDED = {"ascend": "3.2.0", "upstream": "3.9.0"}
_UPSTREAM_BACKENDS = {"nvidia", "amd"}


def check() -> None:
    """``ImportError`` that says what is wrong and how to repair it, unless the installed
    ``triton`` is one Triton, whole (``problem()``)."""
    found = problem()
    if found is not None:
        raise ImportError(f"mse_grad_triton: {found}.\n{repair_advice()}")


def problem() -> Optional[str]:
    """What is wrong with the installed ``triton``: missing, or a mix of triton-ascend and
    upstream Triton (both backends in its folder, both distributions installed, or a version
    in the folder that neither installed distribution claims). None when it is one, whole."""
    spec = importlib.util.find_spec("triton")
    if spec is None or not spec.submodule_search_locations:
        return "no `triton` module is installed (triton-ascend for Ascend NPUs, upstream " \
               "triton for CUDA GPUs)"
    folder = Path(list(spec.submodule_search_locations)[0])
    backends = sorted(p.name for p in (folder / "backends").glob("*")
                      if p.is_dir() and not p.name.startswith("__"))
    installed = installed_distributions()
    version = _folder_version(folder)
    where = f"the `triton` folder {folder}"
    if "ascend" in backends and _UPSTREAM_BACKENDS & set(backends):
        return (f"{where} mixes triton-ascend and upstream Triton (backends "
                f"{', '.join(backends)}; installed: {_describe(installed) or 'neither'})")
    if len(installed) == 2:
        return f"{where} was written by both {_describe(installed)}"
    flavour = "ascend" if "ascend" in backends else "upstream"
    claimed = installed.get(ASCEND_DISTRIBUTION if flavour == "ascend"
                            else UPSTREAM_DISTRIBUTION)
    if installed and version is not None and release(claimed) != release(version):
        return (f"{where} holds {_flavour_name(flavour)} {version} (backends "
                f"{', '.join(backends) or 'none'}), but pip lists {_describe(installed)}")
    return None


def installed_distributions() -> Dict[str, str]:
    """The Triton distributions pip has installed: name -> version."""
    installed = {}
    for name in (ASCEND_DISTRIBUTION, UPSTREAM_DISTRIBUTION):
        try:
            installed[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return installed


def repair_commands() -> Dict[str, str]:
    """Per flavour (``"ascend"``, ``"upstream"``), the commands that leave that Triton alone:
    both removed, then one installed without its dependencies (so that torch's requirement
    on upstream Triton does not bring the other back)."""
    pip = f"{sys.executable} -m pip"
    remove = f"{pip} uninstall -y {UPSTREAM_DISTRIBUTION} {ASCEND_DISTRIBUTION}"
    installed = installed_distributions()
    ascend = installed.get(ASCEND_DISTRIBUTION, RECOMMENDED["ascend"])
    upstream = _torch_wants_upstream() or installed.get(UPSTREAM_DISTRIBUTION,
                                                       RECOMMENDED["upstream"])
    return {"ascend": f"{remove} && {pip} install --no-deps {ASCEND_DISTRIBUTION}=={ascend}",
            "upstream": f"{remove} && {pip} install --no-deps {UPSTREAM_DISTRIBUTION}=="
                        f"{upstream}"}


def repair_advice() -> str:
    """How to repair the installation, for an error message."""
    commands = repair_commands()
    return ("triton-ascend and upstream Triton install the same `triton` folder; keep one:\n"
            f"  for Ascend NPUs: {commands['ascend']}\n"
            f"  for CUDA GPUs:   {commands['upstream']}")


def _folder_version(folder: Path) -> Optional[str]:
    try:
        text = (folder / "__init__.py").read_text(errors="replace")
    except OSError:
        return None
    match = re.search(r"^__version__\s*=\s*['\"]([^'\"]+)['\"]", text, re.MULTILINE)
    return match.group(1) if match else None


def _torch_wants_upstream() -> Optional[str]:
    """The upstream Triton release the installed torch asks for (``triton~=3.9.0`` -> 3.9.0)."""
    try:
        requirements = importlib.metadata.requires("torch") or []
    except importlib.metadata.PackageNotFoundError:
        return None
    for requirement in requirements:
        match = re.match(r"triton\s*(?:==|~=)\s*([0-9][0-9.]*)", requirement)
        if match:
            return match.group(1)
    return None


def release(version: Optional[str]):
    """``(major, minor)`` of a version string ("3.9.0+git" -> (3, 9)); None if it has none."""
    numbers = re.findall(r"\d+", version or "")[:2]
    return tuple(int(n) for n in numbers) if len(numbers) == 2 else None


def _flavour_name(flavour: str) -> str:
    return "triton-ascend" if flavour == "ascend" else "upstream Triton"


def _describe(installed: Dict[str, str]) -> str:
    return " and ".join(f"{name} {version}" for name, version in installed.items())
