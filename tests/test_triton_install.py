"""A mixed Triton installation is named, with the commands that repair it, before anything
imports triton (``triton_install``); an unsupported release says the same kind of thing
(``triton_compat.check_supported``)."""

import importlib.machinery
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mse_grad_triton import triton_compat, triton_install

# Importing this fake triton is a failure of the check: it must come first.
_FAKE_INIT = "__version__ = '{version}'\nraise RuntimeError('the fake triton was imported')\n"


def _fake_site(root: Path, version: str, backends, distributions) -> Path:
    """A site folder holding a ``triton`` package with these backends and version, and pip
    metadata for ``distributions`` (name -> version)."""
    package = root / "triton"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(_FAKE_INIT.format(version=version))
    for backend in backends:
        (package / "backends" / backend).mkdir(parents=True)
        (package / "backends" / backend / "__init__.py").write_text("")
    for name, dist_version in distributions.items():
        info = root / f"{name.replace('-', '_')}-{dist_version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\n"
                                       f"Version: {dist_version}\n")
    return root


def _import_package_over(site: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(site), str(Path(__file__).resolve().parents[1])]))
    return subprocess.run([sys.executable, "-c", "import mse_grad_triton"], env=env,
                          capture_output=True, text=True, timeout=300)


MIXED = {
    # torch's upstream triton, then triton-ascend over it (or the other way round)
    "both backends": ("3.2.0", ["ascend", "amd", "nvidia"],
                      {"triton-ascend": "3.2.0", "triton": "3.9.0"}, "mixes triton-ascend"),
    "both distributions": ("3.2.0", ["ascend"], {"triton-ascend": "3.2.0", "triton": "3.9.0"},
                           "written by both triton-ascend 3.2.0 and triton 3.9.0"),
}


@pytest.mark.parametrize("case", list(MIXED))
def test_a_mixed_install_is_one_clear_error_with_its_repair(tmp_path, case):
    version, backends, distributions, what = MIXED[case]
    run = _import_package_over(_fake_site(tmp_path, version, backends, distributions))
    assert run.returncode == 1
    assert "the fake triton was imported" not in run.stderr
    last = run.stderr.strip().splitlines()
    error = "\n".join(last[-4:])
    assert last[-4].startswith("ImportError: mse_grad_triton: ") and what in last[-4]
    pip = f"{sys.executable} -m pip"
    remove = f"{pip} uninstall -y triton triton-ascend"
    assert f"for Ascend NPUs: {remove} && {pip} install --no-deps triton-ascend==3.2.0" in error
    assert f"for CUDA GPUs:   {remove} && {pip} install --no-deps triton==" in error


def test_a_version_no_installed_distribution_claims_is_named(tmp_path, monkeypatch):
    # pip's metadata lists only triton-ascend, the folder holds another release's files.
    site = _fake_site(tmp_path, "3.9.0", ["ascend"], {})
    spec = importlib.machinery.ModuleSpec("triton", None, is_package=True)
    spec.submodule_search_locations = [str(site / "triton")]
    monkeypatch.setattr(triton_install.importlib.util, "find_spec", lambda name: spec)
    monkeypatch.setattr(triton_install, "installed_distributions",
                        lambda: {"triton-ascend": "3.2.0"})
    assert "holds triton-ascend 3.9.0" in triton_install.problem()
    monkeypatch.setattr(triton_install, "installed_distributions",
                        lambda: {"triton-ascend": "3.9.0.dev20261201"})
    assert triton_install.problem() is None  # the same release: a development build


def test_no_triton_at_all_is_named_too(tmp_path, monkeypatch):
    monkeypatch.setattr(triton_install.importlib.util, "find_spec", lambda name: None)
    assert "no `triton` module is installed" in triton_install.problem()


def test_this_environment_has_one_triton_whole():
    assert triton_install.problem() is None
    assert len(triton_install.installed_distributions()) == 1


def test_an_unsupported_release_says_how_to_install_a_supported_one(monkeypatch):
    monkeypatch.setattr(triton_compat, "VERSION", (3, 1))
    with pytest.raises(RuntimeError) as raised:
        triton_compat.check_supported()
    message = str(raised.value)
    assert "3.1" not in message.split("\n")[0].split("but")[0]  # the supported ones first
    assert "is installed" in message and "--no-deps" in message


def test_releases_read_as_major_and_minor():
    assert triton_install.release("3.9.0+git1234") == (3, 9)
    assert triton_install.release("3.2.0rc1") == (3, 2) and triton_install.release("x") is None
