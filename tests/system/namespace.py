"""A real systemd for the system tests: PID 1 of new PID and mount namespaces on this machine.

The file system and the network are the host's (units installed on the host are visible, and a
simulator on the host's loopback is reachable), so booting must not run what a normal boot runs:
``systemd-tmpfiles-setup`` would empty the host's /tmp, ``systemd-sysctl`` would change the host
kernel's settings. Hence:

- systemd boots a minimal target (journald only), from a unit directory of its own;
- ``container=`` in its environment tells it that it is not the machine's init, so on poweroff it
  neither unmounts nor remounts file systems read-only (the root file system is the host's);
- the host's ``policy-rc.d`` (a container image's "never start services") is hidden there;
- before a test starts a unit, `quarantine` masks (``--runtime``: in the namespace's own /run)
  every unit that the start would pull in besides the ones under test, plus a fixed list of units
  that touch host state, and `assert_quiet` checks afterwards that nothing else ran.

Always leave with `poweroff` (it kills the namespace's PID 1 if systemd does not go down in time).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

__all__ = ["SystemdNamespace"]

SYSTEMD = "/lib/systemd/systemd"
BOOT_TARGET = "pytest-minimal-boot.target"
BOOT_UNIT = """\
[Unit]
Description=consolidator system tests: a minimal boot (journald only)
Wants=systemd-journald.socket systemd-journald.service
"""
NEVER = (
    # Units of a normal boot that change state shared with the host.
    "systemd-tmpfiles-setup.service",
    "systemd-tmpfiles-setup-dev.service",
    "systemd-tmpfiles-clean.service",
    "systemd-tmpfiles-clean.timer",
    "systemd-sysctl.service",
    "systemd-sysusers.service",
    "systemd-remount-fs.service",
    "systemd-binfmt.service",
    "systemd-modules-load.service",
    "systemd-random-seed.service",
    "systemd-update-utmp.service",
    "systemd-journal-flush.service",
    "systemd-udevd.service",
    "systemd-udev-trigger.service",
    "systemd-timesyncd.service",
    "networking.service",
    "systemd-networkd.service",
    "emergency.service",
    "emergency.target",
    "rescue.service",
    "rescue.target",
)
ALWAYS_ACTIVE = ("systemd-journald.service",)
POLICY_RC_D = "/usr/sbin/policy-rc.d"
"""Container images ship one that forbids maintainer scripts to (re)start services; a machine
booted with systemd has none, so the namespace hides it."""


class SystemdNamespace:
    """``systemd --system`` as PID 1 of a new PID and mount namespace.

    Args:
        boot_timeout_s: how long to wait for the manager to answer.
    """

    def __init__(self, boot_timeout_s: float = 30.0) -> None:
        self._units = Path(tempfile.mkdtemp(prefix="pytest-systemd-units-"))
        (self._units / BOOT_TARGET).write_text(BOOT_UNIT)
        env = {
            **os.environ,
            "container": "pytest-consolidator",
            # Our directory first, then the usual search path (the trailing colon).
            "SYSTEMD_UNIT_PATH": f"{self._units}:",
        }
        self._log = self._units / "systemd.log"
        with self._log.open("wb") as log:
            self._unshare = subprocess.Popen(
                ["unshare", "--pid", "--fork", "--mount", "--mount-proc",
                 SYSTEMD, "--system", f"--unit={BOOT_TARGET}"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env, cwd="/",
            )  # fmt: skip
        self.pid = 0
        try:
            self.pid = self._find_pid1(boot_timeout_s)
            self._wait_running(boot_timeout_s)
            if Path(POLICY_RC_D).exists():  # in the namespace only: its mounts are private
                self.run("mount", "--bind", "/dev/null", POLICY_RC_D)
        except BaseException:
            self.poweroff()
            raise

    def _find_pid1(self, timeout_s: float) -> int:
        """The host PID of systemd: the child that unshare forked."""
        children = Path(f"/proc/{self._unshare.pid}/task/{self._unshare.pid}/children")
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._unshare.poll() is not None:
                raise AssertionError(f"systemd did not boot: {self._log.read_text()}")
            with_child = children.read_text().split() if children.exists() else []
            if with_child:
                return int(with_child[0])
            time.sleep(0.05)
        raise AssertionError("unshare forked no systemd")

    def _wait_running(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        state = ""
        while time.monotonic() < deadline:
            state = self.run("systemctl", "is-system-running", check=False).stdout.strip()
            if state in ("running", "degraded"):
                return
            time.sleep(0.1)
        raise AssertionError(f"systemd in the namespace is {state!r}: {self._log.read_text()}")

    # -- commands inside ---------------------------------------------------------------------

    def run(
        self, *args: str, check: bool = True, timeout: float = 120.0, user: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run a command in the namespace (its /proc, its PIDs; the host's files)."""
        prefix = ["runuser", "-u", user, "--"] if user else []
        proc = subprocess.run(
            ["nsenter", "-t", str(self.pid), "-p", "-m", "--", *prefix, *args],
            capture_output=True, text=True, timeout=timeout, check=False, cwd="/",
            env={**os.environ, "DEBIAN_FRONTEND": "noninteractive", "SYSTEMD_PAGER": "",
                 "SYSTEMD_COLORS": "0"},
        )  # fmt: skip
        if check and proc.returncode != 0:
            raise AssertionError(
                f"{' '.join(args)}: exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
            )
        return proc

    def systemctl(self, *args: str, check: bool = True) -> str:
        return self.run("systemctl", "--no-pager", *args, check=check).stdout

    def show(self, unit: str, prop: str) -> str:
        """One property of a unit (``systemctl show -p PROP --value``)."""
        return self.systemctl("show", "-p", prop, "--value", unit).strip()

    def read(self, path: str) -> str:
        """A file as the namespace sees it (its /proc)."""
        return self.run("cat", path).stdout

    def journal(self, unit: str) -> str:
        return self.run("journalctl", "--no-pager", "-o", "cat", "-u", unit).stdout

    # -- isolation from the host -----------------------------------------------------------

    def quarantine(self, targets: Sequence[str], keep: Iterable[str]) -> list[str]:
        """Mask every unit that starting ``targets`` would pull in, except ``keep`` (globs).

        Targets, slices and units already active stay; so do the units matching ``keep``.
        Returns the masked units.
        """
        listed = self.systemctl("list-dependencies", "--plain", "--all", "--no-legend", *targets)
        pulled = {line.strip().lstrip("●○ ") for line in listed.splitlines() if line.strip()}
        kept = set(keep)
        candidates = sorted((pulled | set(NEVER)) - set(targets))
        masked = []
        for unit in candidates:
            if any(Path(unit).match(pattern) for pattern in kept):
                continue
            if unit.endswith((".target", ".slice", ".scope")) and unit not in NEVER:
                continue
            if self.show(unit, "ActiveState") == "active":
                continue
            masked.append(unit)
        if masked:
            self.systemctl("mask", "--runtime", "--quiet", *masked)
        return masked

    def assert_quiet(self, keep: Iterable[str]) -> None:
        """No service, timer, socket or mount beyond boot's own and ``keep`` has run."""
        out = self.systemctl(
            "list-units", "--all", "--plain", "--no-legend",
            "--type=service,timer,path,swap,automount", "--state=active,activating,failed,exited",
        )  # fmt: skip
        patterns = [*keep, *ALWAYS_ACTIVE]
        extra = [
            line.split()[0]
            for line in out.splitlines()
            if line.strip() and not any(Path(line.split()[0]).match(p) for p in patterns)
        ]
        assert not extra, f"units outside the test ran in the namespace: {extra}"

    # -- the end -------------------------------------------------------------------------------

    def poweroff(self, timeout_s: float = 60.0) -> None:
        """``systemctl poweroff``; SIGKILL to the namespace's PID 1 if it is not down in time."""
        try:
            if self.pid and self._unshare.poll() is None:
                self.run("systemctl", "poweroff", "--no-block", check=False, timeout=30)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self._unshare.wait(timeout_s)
            if self._unshare.poll() is None:
                if self.pid:
                    os.kill(self.pid, signal.SIGKILL)
                else:
                    self._unshare.kill()
                self._unshare.wait(30)
        finally:
            for path in self._units.iterdir():
                path.unlink()
            self._units.rmdir()
