"""Several "hosts" on this machine: network namespaces joined by a bridge acting as the internet.

Each host namespace gets a veth into a shared "internet" namespace (a bridge there) with a
192.0.2.0/24 (TEST-NET-1) address that exists only inside these namespaces. Every name carries a
random run id, so parallel runs never clash, and `close()` removes everything it made.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import stat
import subprocess
import time
from pathlib import Path

WIREGUARD_SOCKET_DIR = Path("/var/run/wireguard")


def netns_unavailable_reason() -> str | None:
    """Why these tests cannot run here (None when they can): not root, or no `ip netns`."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "iproute2 (`ip`) is not installed"
    probe = f"meshprobe-{secrets.token_hex(4)}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True, timeout=30)
    if made.returncode != 0:
        return f"`ip netns add` fails here: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True, timeout=30)
    return None


def ensure_tun_device() -> bool:
    """Create /dev/net/tun (char 10:200) when missing, as wireguard-go needs it; True if created."""
    tun = Path("/dev/net/tun")
    if tun.exists():
        return False
    tun.parent.mkdir(parents=True, exist_ok=True)
    os.mknod(tun, 0o666 | stat.S_IFCHR, os.makedev(10, 200))
    return True


class NetnsLab:
    """Namespaces, links and processes of one test run; use as a context manager."""

    def __init__(self) -> None:
        self.run_id = secrets.token_hex(3)  # six hex chars keep interface names under 15 chars
        self.internet = f"mesh-{self.run_id}-net"
        self.namespaces: list[str] = []
        self.processes: list[subprocess.Popen[bytes]] = []
        self.wireguard_interfaces: list[str] = []

    def __enter__(self) -> NetnsLab:
        try:
            self._add_namespace(self.internet)
            self.run("ip", "link", "add", "br0", "type", "bridge", netns=self.internet)
            self.run("ip", "link", "set", "br0", "up", netns=self.internet)
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def run(
        self,
        *argv: str,
        netns: str | None = None,
        stdin: str | None = None,
        check: bool = True,
        timeout: float = 30,
    ) -> subprocess.CompletedProcess[str]:
        """Run a command (inside `netns` when given), bounded in time."""
        prefix = ["ip", "netns", "exec", netns] if netns else []
        result = subprocess.run(
            [*prefix, *argv], input=stdin, capture_output=True, text=True, timeout=timeout
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"{' '.join(argv)} (netns {netns}) exited {result.returncode}: {result.stderr.strip()}"
            )
        return result

    def _add_namespace(self, name: str) -> None:
        self.run("ip", "netns", "add", name)
        self.namespaces.append(name)
        self.run("ip", "link", "set", "lo", "up", netns=name)

    def add_host(self, index: int, public_ip: str) -> str:
        """A host namespace wired to the internet bridge with `public_ip`/24; returns its name."""
        name = f"mesh-{self.run_id}-h{index}"
        self._add_namespace(name)
        host_end, bridge_end = f"mv{self.run_id}{index}", f"mb{self.run_id}{index}"
        self.run("ip", "link", "add", host_end, "type", "veth", "peer", "name", bridge_end)
        self.run("ip", "link", "set", host_end, "netns", name)
        self.run("ip", "link", "set", bridge_end, "netns", self.internet)
        self.run("ip", "link", "set", bridge_end, "master", "br0", "up", netns=self.internet)
        self.run("ip", "addr", "add", f"{public_ip}/24", "dev", host_end, netns=name)
        self.run("ip", "link", "set", host_end, "up", netns=name)
        return name

    def start_wireguard_go(self, netns: str, index: int, timeout: float = 15) -> str:
        """Start userspace WireGuard in `netns`; returns the interface name once it is usable."""
        interface = f"mw{self.run_id}{index}"
        self.wireguard_interfaces.append(interface)
        process = subprocess.Popen(
            ["ip", "netns", "exec", netns, "wireguard-go", "-f", interface],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        self.processes.append(process)
        socket = WIREGUARD_SOCKET_DIR / f"{interface}.sock"
        deadline = time.monotonic() + timeout
        while not socket.exists():
            if process.poll() is not None:
                error = process.stderr.read().decode() if process.stderr else ""
                raise AssertionError(f"wireguard-go exited {process.returncode} in {netns}: {error}")
            if time.monotonic() > deadline:
                raise AssertionError(f"wireguard-go made no control socket {socket} within {timeout}s")
            time.sleep(0.05)
        return interface

    def start_holder(self, netns: str) -> int:
        """A process in `netns` with a private mount namespace: its own /etc/wireguard, /run/wireguard
        and no systemd, so a host's apply script (wg-quick and all) runs here as on a server."""
        hide_systemd = "if [ -d /run/systemd ]; then mount -t tmpfs tmpfs /run/systemd; fi; "
        process = subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                netns,
                "unshare",
                "--mount",
                "--propagation",
                "private",
                "sh",
                "-c",
                "mkdir -p /etc/wireguard /run/wireguard && mount -t tmpfs tmpfs /etc/wireguard && "
                "mount -t tmpfs tmpfs /run/wireguard && " + hide_systemd + "echo ready && exec sleep 600",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self.processes.append(process)
        assert process.stdout is not None
        line = process.stdout.readline().decode().strip()  # bounded: the process ends within 600 s
        if line != "ready":
            error = process.stderr.read().decode() if process.stderr else ""
            raise AssertionError(f"mount namespace holder in {netns} failed: {error}")
        return process.pid

    def run_in_holder(
        self, holder_pid: int, *argv: str, stdin: str | None = None, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        """Run a command in the holder's network and mount namespaces."""
        return subprocess.run(
            ["nsenter", "-t", str(holder_pid), "-m", "-n", *argv],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def ping_concurrently(
        self, attempts: list[tuple[str, str]], deadline_seconds: int
    ) -> dict[tuple[str, str], bool]:
        """Ping (netns, address) pairs all at once, each for at most `deadline_seconds`; True = answered."""
        pings = {
            attempt: subprocess.Popen(
                [
                    "ip",
                    "netns",
                    "exec",
                    attempt[0],
                    "ping",
                    "-n",
                    "-q",
                    "-c",
                    "5",
                    "-i",
                    "0.5",
                    "-W",
                    "1",
                    "-w",
                    str(deadline_seconds),
                    attempt[1],
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for attempt in attempts
        }
        return {attempt: ping.wait(timeout=deadline_seconds + 10) == 0 for attempt, ping in pings.items()}

    def close(self) -> None:
        """Stop every process of this run, delete the namespaces and stale control sockets."""
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)
            for stream in (process.stdout, process.stderr):
                if stream:
                    stream.close()
        # Daemons started inside our namespaces (wg-quick's wireguard-go) are ours too.
        for name in self.namespaces:
            pids = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True, timeout=30)
            for pid in pids.stdout.split():
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except ProcessLookupError:
                    pass
        for name in reversed(self.namespaces):
            subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=30)
        for interface in self.wireguard_interfaces:
            (WIREGUARD_SOCKET_DIR / f"{interface}.sock").unlink(missing_ok=True)
