"""System tests: the .deb built once per session, installed under a real systemd.

They need root (CI runs them as root on this machine); as another user they are skipped. Set
``CONSOLIDATOR_TEST_DEB=/path/to/consolidator_<version>_amd64.deb`` to test a package built
before instead of building one (``make deb``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.feed.helpers import REPO

TOOLS = ("unshare", "nsenter", "runuser", "dpkg-buildpackage", "dh_virtualenv", "lintian")


@pytest.fixture(scope="session")
def deb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The package: built with packaging/build-deb (which also runs lintian), or given."""
    if os.geteuid() != 0:
        pytest.skip("system tests need root (they install a .deb and boot systemd)")
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    assert not missing, f"missing tools (see .ci/run's package list): {missing}"
    given = os.environ.get("CONSOLIDATOR_TEST_DEB")
    if given:
        return Path(given)
    out = tmp_path_factory.mktemp("deb")
    build = subprocess.run(
        [str(REPO / "packaging" / "build-deb"), str(out)],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert (
        build.returncode == 0
    ), f"build-deb failed:\n{build.stdout[-4000:]}\n{build.stderr[-4000:]}"
    (built,) = out.glob("consolidator_*_amd64.deb")
    return built


@pytest.fixture(scope="session")
def upgrade_deb(deb: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same package as a later version (``<version>+systest1``): an upgrade to install."""
    tree = tmp_path_factory.mktemp("upgrade") / "tree"
    subprocess.run(["dpkg-deb", "-R", str(deb), str(tree)], check=True)
    control = tree / "DEBIAN" / "control"
    lines = control.read_text().splitlines()
    version = next(line.split(": ", 1)[1] for line in lines if line.startswith("Version: "))
    newer = f"{version}+systest1"
    control.write_text(
        "\n".join(f"Version: {newer}" if line.startswith("Version: ") else line for line in lines)
        + "\n"
    )
    out = tree.parent / f"consolidator_{newer}_amd64.deb"
    subprocess.run(
        ["dpkg-deb", "-Zgzip", "-b", str(tree), str(out)], check=True, capture_output=True
    )
    shutil.rmtree(tree)
    return out


@pytest.fixture(scope="session")
def clean_host() -> Iterator[None]:
    """Refuse to run over a real installation; afterwards remove what the tests created."""
    installed = subprocess.run(
        ["dpkg-query", "-W", "-f=${Status}", "consolidator"],
        capture_output=True,
        text=True,
        check=False,
    )
    if "installed" in installed.stdout or Path("/etc/consolidator").exists():
        pytest.skip("consolidator is installed on this machine: not testing over it")
    for data in ("/var/lib/consolidator", "/dev/shm/consolidator"):
        if Path(data).exists():  # a purge keeps the journal: the tests would continue it
            pytest.skip(f"{data} exists (an earlier installation's data): not testing over it")
    had_user = subprocess.run(
        ["getent", "passwd", "consolidator"], capture_output=True, check=False
    )
    yield
    status = subprocess.run(
        ["dpkg-query", "-W", "-f=${Status}", "consolidator"],
        capture_output=True,
        text=True,
        check=False,
    )
    if status.returncode == 0 and "not-installed" not in status.stdout:
        subprocess.run(["dpkg", "--purge", "consolidator"], capture_output=True, check=False)
    for data in ("/var/lib/consolidator", "/dev/shm/consolidator"):
        shutil.rmtree(data, ignore_errors=True)
    if had_user.returncode != 0:
        subprocess.run(["userdel", "consolidator"], capture_output=True, check=False)
        subprocess.run(["groupdel", "consolidator"], capture_output=True, check=False)
