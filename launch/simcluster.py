"""A simulated cluster on one Linux machine: each "node" is a network namespace with its own
hostname, the nodes are joined by veth links (through a bridge for more than two), and MPI
ranks talk over TCP across them, so traffic crosses a real network stack instead of shared
memory. Optional ``tbf`` rate limits turn the link into a 10, 2 or 1 Gb/s network.

As a person (root is needed to make namespaces)::

    sudo python launch/simcluster.py --nodes 2 --ranks-per-node 2 --rate 1gbit -- python examples/train_mlp.py
    sudo python launch/simcluster.py --check      # can a cluster be made here? says why not
    sudo python launch/simcluster.py --cleanup    # remove what crashed runs left behind

From Python (tests, benchmarks)::

    with SimCluster(nodes=2, rate="1gbit") as cluster:
        proc = cluster.run([sys.executable, "job.py"], ranks_per_node=1, timeout=60)

How it works: node ``i`` is the namespace ``ddpsim-<pid>-<serial>-<i>`` with the interface ``eth1`` at
``10.231.0.<i+1>`` (a private range that exists only inside these namespaces: nothing is routed
out of them) and the hostname ``simnode<i>`` (MPICH decides which ranks share a node by
hostname). ``mpiexec`` runs in node 0; Hydra starts its proxies on the other nodes through the
"ssh" launcher, with a stand-in script in place of ssh that runs the command inside that node's
namespace under that node's hostname. UCX (the mpich wheel's network module) is held to TCP,
since between namespaces of one kernel it would otherwise use shared memory.

Everything a cluster makes is named after the pid that made it, so concurrent runs never
collide, and it is removed on exit, on an exception, a timeout or Ctrl-C; what a killed run
left behind is removed by the next one (``cleanup_stale``).
"""

from __future__ import annotations

import argparse
import itertools
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time

IFACE = "eth1"
"""The simulated network's interface, the same name on every node: one ``-iface eth1`` (or
``GLOO_SOCKET_IFNAME=eth1``) serves them all."""
SUBNET = "10.231.0"
"""Node i is SUBNET.(i+1)/24. A private range, assigned only inside this tool's namespaces."""
PREFIX = "ddpsim"
"""Namespaces are PREFIX-<pid>-<serial>-<node> (and ...-switch): the pid tells stale from live."""
HOSTNAME = "simnode{}"
MAX_NODES = 250
"""Addresses SUBNET.1 .. SUBNET.250 (one /24)."""
UCX_ENV = {"UCX_TLS": "tcp", "UCX_NET_DEVICES": IFACE}
"""Without UCX_TLS=tcp, UCX moves data between namespaces of one kernel through shared memory
(an 8 MB allreduce took 3.2 ms with or without a rate limit); with it, traffic crosses eth1."""
TBF_BURST_MIN_BYTES = 256 * 1024
TBF_BURST_WINDOW_S = 0.002
"""tbf's bucket: at least 256 KiB (the setting measured at 1 and 2 Gb/s) and at least 2 ms of traffic
at the rate, so that the timer's granularity does not cap fast links below their rate."""
TBF_LATENCY = "100ms"
"""How long a packet may queue in tbf before it is dropped: longer than any burst MPI sends."""
DEFAULT_TIMEOUT_S = 600.0
LINK_UP_TIMEOUT_S = 5.0
KILL_GRACE_S = 3.0
"""After a timeout: SIGTERM, this long to exit, then SIGKILL."""
THREAD_ENV = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
"""Set by the command line when unset: every simulated node shares this machine's cores."""
LAUNCHER_ENV_PREFIXES = ("PMI_", "PMIX_", "MPI_", "MPIR_", "HYDRA_", "OMPI_")
"""Variables of an enclosing MPI job: a fresh job must not inherit them."""

_serial = itertools.count()  # clusters made by this process, for unique names
_RATE = re.compile(r"^(\d+(?:\.\d+)?)(bit|kbit|mbit|gbit)$")
_RATE_SCALE = {"bit": 1, "kbit": 1e3, "mbit": 1e6, "gbit": 1e9}


class ClusterUnavailable(RuntimeError):
    """Namespaces can not be made here (not root, a tool missing, no namespace support)."""


class ClusterJobFailed(RuntimeError):
    """A job on the simulated cluster failed or timed out; the message carries its output."""

    def __init__(self, message, returncode=None, stdout="", stderr=""):
        super().__init__(message)
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


# ------------------------------------------------------------------------------ checks
def rate_bits_per_s(rate: str | None) -> float | None:
    """``"1gbit"`` -> 1e9; ``None``/``"unlimited"`` -> None. Units as tc writes them."""
    if rate is None or rate == "unlimited":
        return None
    match = _RATE.match(str(rate).strip().lower())
    if not match or float(match.group(1)) <= 0:
        raise ValueError(f"rate must be like 10gbit, 500mbit or 'unlimited', got {rate!r}")
    return float(match.group(1)) * _RATE_SCALE[match.group(2)]


def unavailable_reason() -> str | None:
    """Why a simulated cluster can not be made here, or None if it can (tries one namespace)."""
    if os.name != "posix" or not sys.platform.startswith("linux"):
        return f"network namespaces need Linux, this is {sys.platform}"
    if os.geteuid() != 0:
        return "making network namespaces needs root (run as root, e.g. sudo)"
    missing = [tool for tool in ("ip", "tc", "unshare") if shutil.which(tool) is None]
    if missing:
        return f"missing {', '.join(missing)} (apt-get install iproute2 util-linux)"
    probe = f"{PREFIX}-{os.getpid()}-probe"
    made = _sh(["ip", "netns", "add", probe], check=False)
    if made.returncode != 0:
        return f"`ip netns add` failed: {made.stderr.strip()}"
    _sh(["ip", "netns", "del", probe], check=False)
    uts = _sh(["unshare", "--uts", "true"], check=False)
    if uts.returncode != 0:
        return f"`unshare --uts` failed: {uts.stderr.strip()}"
    return None


def _sh(cmd, check=True, timeout=30):
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{shlex.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc


def _is_up(brief_link: str) -> bool:
    flags = brief_link[brief_link.find("<") + 1:brief_link.find(">")].split(",")
    return "LOWER_UP" in flags and "NO-CARRIER" not in flags


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _namespaces() -> list[str]:
    out = _sh(["ip", "netns", "list"], check=False).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def _kill_namespace_processes(ns: str):
    """SIGTERM, a short grace, then SIGKILL to every process inside namespace ``ns``."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        pids = [int(p) for p in _sh(["ip", "netns", "pids", ns], check=False).stdout.split()]
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + KILL_GRACE_S
        while sig == signal.SIGTERM and time.monotonic() < deadline:
            if not _sh(["ip", "netns", "pids", ns], check=False).stdout.split():
                return
            time.sleep(0.05)


def _delete_namespace(ns: str):
    _kill_namespace_processes(ns)
    _sh(["ip", "netns", "del", ns], check=False)  # takes its veth ends (and their peers) along


def cleanup_stale() -> list[str]:
    """Remove the namespaces of runs whose process is gone (a crash, a SIGKILL). Returns them."""
    removed = []
    for ns in _namespaces():
        match = re.match(rf"^{PREFIX}-(\d+)-", ns)
        if match and not _pid_alive(int(match.group(1))):
            _delete_namespace(ns)
            removed.append(ns)
    for path in _stale_dirs():
        shutil.rmtree(path, ignore_errors=True)
    return removed


def _stale_dirs():
    tmp = tempfile.gettempdir()
    for entry in os.listdir(tmp):
        match = re.match(rf"^{PREFIX}-(\d+)-", entry)
        if match and not _pid_alive(int(match.group(1))):
            yield os.path.join(tmp, entry)


def blas_threads_per_rank(ranks: int) -> int:
    """The machine's usable cores shared out among all ranks of all nodes, at least one each."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // ranks)


def find_mpiexec() -> str:
    """The mpiexec beside this Python (the mpich wheel's), else the first on PATH."""
    here = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    if os.access(here, os.X_OK):
        return here
    found = shutil.which("mpiexec")
    if not found:
        raise SystemExit("no mpiexec found: pip install mpich (the project's [mpi] extra installs it)")
    return found


# ------------------------------------------------------------------------------ the cluster
STANDIN = """#!/bin/sh
# Hydra's "ssh": {standin} [-x] HOST CMD... runs CMD in HOST's namespace under its hostname.
[ "$1" = "-x" ] && shift
host=$1; shift
case "$host" in
{cases}
  *) echo "simcluster: no simulated node has the address $host" >&2; exit 255;;
esac
exec ip netns exec "$ns" unshare --uts sh -c 'hostname "$0" && exec sh -c "$1"' "$name" "$*"
"""


class SimCluster:
    """``nodes`` network namespaces joined by a simulated network, as a context manager.

    ``rate`` (``"1gbit"``, ``"500mbit"``, None for unlimited) limits every link in both
    directions; ``set_rate`` changes it later. ``run`` starts an MPI job across the nodes.
    """

    def __init__(self, nodes: int = 2, rate: str | None = None):
        if not isinstance(nodes, int) or not 1 <= nodes <= MAX_NODES:
            raise ValueError(f"nodes must be an integer from 1 to {MAX_NODES}, got {nodes!r}")
        rate_bits_per_s(rate)  # a bad rate fails before anything is made
        self.nodes, self.rate = nodes, rate
        tag = f"{PREFIX}-{os.getpid()}-{next(_serial)}"
        self.namespaces = [f"{tag}-{i}" for i in range(nodes)]
        self.switch = f"{tag}-switch" if nodes > 2 else None
        self.addresses = [f"{SUBNET}.{i + 1}" for i in range(nodes)]
        self.hostnames = [HOSTNAME.format(i) for i in range(nodes)]
        self.tmpdir = None
        self.standin = None
        self._made: list[str] = []

    # -------------------------------------------------------------- life cycle
    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def start(self):
        reason = unavailable_reason()
        if reason:
            raise ClusterUnavailable(f"no simulated cluster here: {reason}")
        cleanup_stale()
        try:
            self._make_network()
            self.set_rate(self.rate)
            self._write_standin()
        except BaseException:
            self.close()
            raise
        return self

    def close(self):
        """Kill every process left in the nodes, delete the namespaces and the temporary files."""
        for ns in reversed(self._made):
            _delete_namespace(ns)
        self._made = []
        if self.tmpdir:
            shutil.rmtree(self.tmpdir, ignore_errors=True)
            self.tmpdir = None

    def _add_namespace(self, ns):
        _sh(["ip", "netns", "add", ns])
        self._made.append(ns)
        _sh(["ip", "-n", ns, "link", "set", "lo", "up"])

    def _make_network(self):
        for ns in self.namespaces:
            self._add_namespace(ns)
        if self.switch:
            self._add_namespace(self.switch)
            _sh(["ip", "-n", self.switch, "link", "add", "br0", "type", "bridge"])
            _sh(["ip", "-n", self.switch, "link", "set", "br0", "up"])
            for i, ns in enumerate(self.namespaces):
                port = f"port{i}"
                _sh(["ip", "link", "add", IFACE, "netns", ns, "type", "veth", "peer", "name", port,
                     "netns", self.switch])
                _sh(["ip", "-n", self.switch, "link", "set", port, "master", "br0", "up"])
        elif self.nodes == 2:
            _sh(["ip", "link", "add", IFACE, "netns", self.namespaces[0], "type", "veth", "peer", "name",
                 IFACE, "netns", self.namespaces[1]])
        else:  # one node: a veth whose far end stays in the same node, so that -iface still works
            _sh(["ip", "-n", self.namespaces[0], "link", "add", IFACE, "type", "veth", "peer", "name", "loopend"])
            _sh(["ip", "-n", self.namespaces[0], "link", "set", "loopend", "up"])
        for ns, addr in zip(self.namespaces, self.addresses):
            _sh(["ip", "-n", ns, "addr", "add", f"{addr}/24", "dev", IFACE])
            _sh(["ip", "-n", ns, "link", "set", IFACE, "up"])
        self._wait_until_links_are_up()

    def _wait_until_links_are_up(self):
        """A veth reports carrier a moment after both ends are up; UCX skips a device that is down."""
        deadline = time.monotonic() + LINK_UP_TIMEOUT_S
        for ns in self.namespaces:
            while not _is_up(_sh(["ip", "-n", ns, "-br", "link", "show", IFACE]).stdout):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{IFACE} in {ns} not up after {LINK_UP_TIMEOUT_S} s")
                time.sleep(0.02)

    def _links(self):
        """(namespace, device) of every sending end: each node's eth1 and each switch port."""
        ends = [(ns, IFACE) for ns in self.namespaces]
        if self.switch:
            ends += [(self.switch, f"port{i}") for i in range(self.nodes)]
        return ends

    def set_rate(self, rate: str | None):
        """Limit every link to ``rate`` in both directions (tbf on each sending end); None lifts it."""
        bits = rate_bits_per_s(rate)
        for ns, dev in self._links():
            if bits is None:
                _sh(["tc", "-n", ns, "qdisc", "del", "dev", dev, "root"], check=False)
                continue
            burst = max(TBF_BURST_MIN_BYTES, int(bits / 8 * TBF_BURST_WINDOW_S))
            _sh(["tc", "-n", ns, "qdisc", "replace", "dev", dev, "root", "tbf", "rate", f"{int(bits)}bit",
                 "burst", str(burst), "latency", TBF_LATENCY])
        self.rate = rate

    def _write_standin(self):
        self.tmpdir = tempfile.mkdtemp(prefix=f"{PREFIX}-{os.getpid()}-")
        cases = "\n".join(f"  {addr}) ns={ns}; name={name};;"
                          for addr, ns, name in zip(self.addresses, self.namespaces, self.hostnames))
        self.standin = os.path.join(self.tmpdir, "standin-ssh")
        with open(self.standin, "w") as f:
            f.write(STANDIN.format(standin=self.standin, cases=cases))
        os.chmod(self.standin, 0o755)

    # -------------------------------------------------------------- commands
    def node_command(self, node: int, cmd) -> list[str]:
        """``cmd`` run inside node ``node``'s namespace under its hostname."""
        if not 0 <= node < self.nodes:
            raise ValueError(f"node must be 0..{self.nodes - 1}, got {node}")
        return [self.standin, self.addresses[node], shlex.join(cmd)]

    def mpiexec_command(self, cmd, ranks_per_node: int = 1, mpiexec: str | None = None) -> list[str]:
        """The mpiexec line (to run in node 0) placing ``ranks_per_node`` ranks on every node."""
        if not isinstance(ranks_per_node, int) or ranks_per_node < 1:
            raise ValueError(f"ranks_per_node must be at least 1, got {ranks_per_node!r}")
        hosts = ",".join(f"{addr}:{ranks_per_node}" for addr in self.addresses)
        return [mpiexec or find_mpiexec(), "-launcher", "ssh", "-launcher-exec", self.standin,
                "-iface", IFACE, "-hosts", hosts, "-n", str(self.nodes * ranks_per_node), *cmd]

    def env(self, base: dict | None = None, **extra) -> dict:
        """``base`` (default: this process's environment) without an enclosing MPI job's
        variables, with UCX held to TCP on eth1, plus ``extra``."""
        env = {k: v for k, v in (os.environ if base is None else base).items()
               if not k.startswith(LAUNCHER_ENV_PREFIXES)}
        env.update(UCX_ENV)
        env.update({k: str(v) for k, v in extra.items()})
        return env

    def popen(self, cmd, ranks_per_node: int = 1, env: dict | None = None, **kwargs) -> subprocess.Popen:
        """Start ``cmd`` on every rank (mpiexec in node 0); the caller waits (see ``run``)."""
        line = self.node_command(0, self.mpiexec_command(cmd, ranks_per_node))
        return subprocess.Popen(line, env=self.env(env), start_new_session=True, **kwargs)

    def run(self, cmd, ranks_per_node: int = 1, timeout: float = DEFAULT_TIMEOUT_S, env: dict | None = None,
            check: bool = False, capture: bool = True, cwd=None) -> subprocess.CompletedProcess:
        """Run ``cmd`` on ``nodes x ranks_per_node`` ranks and wait at most ``timeout`` seconds.

        A timeout kills the job and raises ``ClusterJobFailed`` with what it printed; so does a
        non-zero exit when ``check``. ``capture=False`` lets the output through to the terminal.
        """
        pipes = dict(stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) if capture else {}
        proc = self.popen(cmd, ranks_per_node, env, cwd=cwd, **pipes)
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self._stop(proc)
            out, err = proc.communicate()
            raise ClusterJobFailed(f"{shlex.join(cmd)} on {self.nodes} nodes x {ranks_per_node} did not finish "
                                   f"in {timeout:g} s; killed.\n--- stdout:\n{out or ''}\n--- stderr:\n{err or ''}",
                                   None, out or "", err or "") from None
        except BaseException:  # Ctrl-C: take the job down with us
            self._stop(proc)
            raise
        if check and proc.returncode != 0:
            raise ClusterJobFailed(f"{shlex.join(cmd)} on {self.nodes} nodes x {ranks_per_node} failed with exit "
                                   f"{proc.returncode}.\n--- stdout:\n{out or ''}\n--- stderr:\n{err or ''}",
                                   proc.returncode, out or "", err or "")
        return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)

    def _stop(self, proc):
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(KILL_GRACE_S)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for ns in self.namespaces:  # ranks on other nodes are not in our process group
            _kill_namespace_processes(ns)


# ------------------------------------------------------------------------------ command line
def _interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv=None):
    p = argparse.ArgumentParser(
        description="Run an MPI job across simulated nodes (network namespaces) on this machine.",
        usage="%(prog)s [--nodes N] [--ranks-per-node R] [--rate RATE] [--timeout S] -- COMMAND...")
    p.add_argument("--nodes", type=int, default=2, help="simulated nodes (default 2)")
    p.add_argument("--ranks-per-node", type=int, default=1, help="MPI ranks on each node (default 1)")
    p.add_argument("--rate", default=None, help="link rate limit, e.g. 10gbit, 1gbit, 500mbit (default: none)")
    p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, help="seconds before the job is killed")
    p.add_argument("--check", action="store_true", help="say whether a cluster can be made here, then exit")
    p.add_argument("--cleanup", action="store_true", help="remove namespaces left by crashed runs, then exit")
    p.add_argument("command", nargs=argparse.REMAINDER, help="the command every rank runs (after --)")
    a = p.parse_args(argv)
    if a.check:
        reason = unavailable_reason()
        print(f"simulated cluster unavailable: {reason}" if reason else "simulated cluster: available")
        return 1 if reason else 0
    if a.cleanup:
        removed = cleanup_stale()
        print(f"removed {len(removed)} stale namespace(s){': ' + ', '.join(removed) if removed else ''}")
        return 0
    command = a.command[1:] if a.command[:1] == ["--"] else a.command
    if not command:
        p.error("give the command every rank runs after --, e.g. -- python examples/train_mlp.py")
    try:
        cluster = SimCluster(a.nodes, a.rate)
        if a.ranks_per_node < 1:
            raise ValueError(f"--ranks-per-node must be at least 1, got {a.ranks_per_node}")
    except ValueError as exc:
        p.error(str(exc))
    for sig in (signal.SIGINT, signal.SIGTERM):  # SIGTERM e.g. from timeout(1); SIGINT even if inherited ignored
        signal.signal(sig, _interrupt)
    env = dict(os.environ)
    threads = str(blas_threads_per_rank(a.nodes * a.ranks_per_node))
    for var in THREAD_ENV:
        env.setdefault(var, threads)
    try:
        with cluster:
            nodes = ", ".join(f"{h}={ip}" for h, ip in zip(cluster.hostnames, cluster.addresses))
            print(f"[simcluster] {a.nodes} node(s) {nodes}, {a.ranks_per_node} rank(s) each, rate "
                  f"{a.rate or 'unlimited'}, BLAS threads per rank {env['OPENBLAS_NUM_THREADS']}",
                  file=sys.stderr, flush=True)
            proc = cluster.run(command, a.ranks_per_node, a.timeout, capture=False, env=env)
            return proc.returncode
    except ClusterUnavailable as exc:
        print(exc, file=sys.stderr)
        return 2
    except ClusterJobFailed as exc:
        print(f"[simcluster] {exc}", file=sys.stderr)
        return 124
    except KeyboardInterrupt:
        print("[simcluster] interrupted; cluster removed", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
