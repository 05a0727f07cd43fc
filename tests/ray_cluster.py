"""A two-node Ray cluster on the loopback interface, started and stopped by a test.

* head: `ray start --head --block` bound to 127.0.0.1, carrying a custom resource, as a
  child process of the test (stopped with SIGTERM to that pid);
* worker: a second raylet on 127.0.0.1 joined to the head. `ray start --address` refuses
  to start a worker while RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 (which is what keeps Ray on
  127.0.0.1; without it Ray 2.60 listens on every interface), so the worker is started
  the way `ray start` starts one, through ray._private.node.Node: test-only code.

Token authentication is on, with a token file of the test's own (RAY_AUTH_MODE=token,
RAY_AUTH_TOKEN_PATH), exported to the nodes and to every driver through `env`. Processes
are found by their own --temp-dir and stopped by pid; never `ray stop`, which stops every
Ray process of the machine."""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

_WORKER = """
import sys, ray._private.node, ray._private.parameter
gcs, temp_dir, ports = sys.argv[1], sys.argv[2], [int(p) for p in sys.argv[3].split(",")]
params = ray._private.parameter.RayParams(
    node_ip_address="127.0.0.1", node_name="worker", gcs_address=gcs, temp_dir=temp_dir,
    node_manager_port=ports[0], object_manager_port=ports[1], dashboard_agent_listen_port=ports[2],
    metrics_agent_port=ports[3], runtime_env_agent_port=ports[4], metrics_export_port=ports[5],
    num_cpus=int(sys.argv[4]), num_gpus=0, resources={},
)
ray._private.node.Node(params, head=False, shutdown_at_exit=False, spawn_reaper=False, connect_only=False)
"""

_NODES = """
import json, ray
ray.init(address=__import__("sys").argv[1], log_to_driver=False)
print(json.dumps([{"id": n["NodeID"], "ip": n["NodeManagerAddress"], "resources": n["Resources"]} for n in ray.nodes() if n["Alive"]]))
ray.shutdown()
"""


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def free_port_range(n: int) -> int:
    """The first of `n` consecutive free ports, below the kernel's ephemeral range (so no
    outgoing connection takes one meanwhile)."""
    import random

    for base in random.Random().sample(range(20000, 30000 - n), 200):
        socks = []
        try:
            for port in range(base, base + n):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError(f"no {n} consecutive free ports in 20000-30000")


def _pids_with(text: str) -> list[int]:
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit() and int(d.name) != os.getpid():
            try:
                if text in (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"):
                    out.append(int(d.name))
            except OSError:
                pass
    return out


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


def _socket_inodes(pid: int) -> set[int]:
    inodes = set()
    try:
        for fd in (Path("/proc") / str(pid) / "fd").iterdir():
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(int(target[8:-1]))
    except OSError:
        pass
    return inodes


def _listening() -> dict[int, str]:
    """inode -> local address of every listening TCP socket (IPv4 and IPv6)."""
    out = {}
    for name, v6 in (("tcp", False), ("tcp6", True)):
        for line in Path(f"/proc/net/{name}").read_text().splitlines()[1:]:
            parts = line.split()
            if parts[3] != "0A":  # LISTEN
                continue
            addr_hex, port_hex = parts[1].split(":")
            raw = bytes.fromhex(addr_hex)
            if v6:
                words = [raw[i:i + 4][::-1] for i in range(0, 16, 4)]
                addr = socket.inet_ntop(socket.AF_INET6, b"".join(words))
            else:
                addr = socket.inet_ntop(socket.AF_INET, raw[::-1])
            out[int(parts[9])] = f"{addr}:{int(port_hex, 16)}"
    return out


class LoopbackCluster:
    def __init__(self, *, head_cpus: int = 1, worker_cpus: int = 2, resource: str = "hw:edge"):
        self.dir = Path(tempfile.mkdtemp(prefix="acrc-"))  # short: Ray's socket paths must stay < 108 bytes
        self.token = self.dir / "token"
        self.token.write_text(secrets.token_hex(32))
        self.token.chmod(0o600)
        self.env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "token",
                    "RAY_AUTH_TOKEN_PATH": str(self.token), "RAY_USAGE_STATS_ENABLED": "0"}
        self.head_dir, self.worker_dir = self.dir / "h", self.dir / "w"
        self.head_cpus, self.worker_cpus, self.resource = head_cpus, worker_cpus, resource
        self.head = None
        self.address = None

    def start(self, timeout: float = 120) -> "LoopbackCluster":
        ray_bin = Path(sys.executable).parent / "ray"
        p = free_ports(14)
        workers = free_port_range(61)  # Ray's worker ports: a whole range, not only the ones picked above
        self.address = f"127.0.0.1:{p[0]}"
        with open(self.dir / "head.log", "ab") as log:
            self.head = subprocess.Popen(
                [str(ray_bin), "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={p[0]}",
                 f"--node-manager-port={p[1]}", f"--object-manager-port={p[2]}", f"--dashboard-agent-listen-port={p[3]}",
                 f"--dashboard-agent-grpc-port={p[4]}", f"--runtime-env-agent-port={p[5]}", f"--metrics-export-port={p[6]}",
                 f"--min-worker-port={workers}", f"--max-worker-port={workers + 60}", "--include-dashboard=false",
                 f"--temp-dir={self.head_dir}", f"--num-cpus={self.head_cpus}", "--num-gpus=0",
                 f"--resources={json.dumps({self.resource: 1})}", "--disable-usage-stats"],
                env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        self._wait(lambda nodes: len(nodes) == 1, timeout)
        subprocess.run([sys.executable, "-c", _WORKER, self.address, str(self.worker_dir), ",".join(map(str, p[7:13])),
                        str(self.worker_cpus)], env=self.env, check=True, timeout=timeout, capture_output=True)
        self._wait(lambda nodes: len(nodes) == 2, timeout)
        return self

    def nodes(self) -> list[dict]:
        done = subprocess.run([sys.executable, "-c", _NODES, self.address], env=self.env, capture_output=True, text=True, timeout=60)
        if done.returncode:
            raise RuntimeError(done.stderr[-2000:])
        return json.loads(done.stdout.strip().splitlines()[-1])

    def _wait(self, ok, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        seen = "no answer"
        while True:
            try:
                nodes = self.nodes()
                if ok(nodes):
                    return
                seen = f"{len(nodes)} node(s)"
            except (RuntimeError, subprocess.TimeoutExpired, json.JSONDecodeError) as exc:
                seen = f"{type(exc).__name__}: {str(exc)[-500:]}"
            if time.monotonic() > deadline:
                log = (self.dir / "head.log").read_text(errors="replace")[-1500:] if (self.dir / "head.log").exists() else ""
                raise TimeoutError(f"the loopback cluster did not come up within {timeout} s (last: {seen}); head log: {log}")
            time.sleep(1)

    def pids(self) -> list[int]:
        return sorted(set(_pids_with(f"{self.head_dir}/session_") + _pids_with(f"{self.worker_dir}/session_")))

    def listen_addresses(self) -> list[str]:
        """Local addresses of the TCP sockets the cluster's processes listen on."""
        listening = _listening()
        return sorted({listening[i] for pid in self.pids() for i in _socket_inodes(pid) if i in listening})

    def stop(self) -> None:
        if self.head is not None and self.head.poll() is None:
            self.head.send_signal(signal.SIGTERM)  # `ray start --block` stops its node on SIGTERM
            try:
                self.head.wait(timeout=40)
            except subprocess.TimeoutExpired:
                self.head.kill()
                self.head.wait()
        for sig, wait in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):  # what is left, ours only, by pid
            pids = self.pids()
            for pid in pids:
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + wait
            while pids and time.monotonic() < deadline:
                pids = [p for p in pids if _alive(p)]
                time.sleep(0.2)

    def __enter__(self) -> "LoopbackCluster":
        for attempt in (1, 2):  # a start that times out is retried once on fresh ports; its error says why
            try:
                return self.start()
            except TimeoutError:
                self.stop()
                if attempt == 2:
                    raise
            except BaseException:
                self.stop()
                raise

    def __exit__(self, *exc) -> None:
        self.stop()
