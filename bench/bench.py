#!/usr/bin/env python3
"""Switchyard load benchmark driver (started by bench/run.sh, which builds and installs).

Real processes only: redis-server, the edge binary, sipp callers and callees, an RCML
application server (bench/app_server.py) and, in the full run, Kamailio as a baseline.
Every figure is measured in this run; nothing is copied from an earlier one.

  bench.py --edge PATH --smoke          a handful of calls through the edge on Redis;
                                        exits non-zero unless every call completed
  bench.py --edge PATH --results FILE   the full run; rewrites FILE (bench/RESULTS.md)
"""
import argparse
import atexit
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

import pcap

BENCH = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH)
SCENARIOS = os.path.join(BENCH, "scenarios")
NUMBER_BASE = 15550100000  # numbers +15550100000, +15550100001, ...: one per sipp pair
TRANSFER_BASE = 15550200000  # the transfer scenario's numbers, one per Alice/Bob/Carol trio
# The transfer flow's peers are the ones the transfer tests show to work with the edge
# (tests/tests/transfer.rs); the benchmark uses those files rather than copies.
TEST_SCENARIOS = os.path.join(ROOT, "tests", "scenarios")
CLK_TCK = os.sysconf("SC_CLK_TCK")

started: list[subprocess.Popen] = []


def cleanup() -> None:
    # Only what this script started, newest first, by pid.
    for proc in reversed(started):
        if proc.poll() is None:
            proc.terminate()
    deadline = time.time() + 5
    for proc in reversed(started):
        try:
            proc.wait(timeout=max(0.1, deadline - time.time()))
        except subprocess.TimeoutExpired:
            proc.kill()


atexit.register(cleanup)
signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    """A port free for both UDP and TCP on 127.0.0.1 (SIP uses both)."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind(("127.0.0.1", 0))
            port = tcp.getsockname()[1]
            try:
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                    udp.bind(("127.0.0.1", port))
                return port
            except OSError:
                continue


def spawn(args, workdir, name, env=None) -> subprocess.Popen:
    out = open(os.path.join(workdir, f"{name}.log"), "wb")
    proc = subprocess.Popen(
        args, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        cwd=workdir, env=env,
    )
    started.append(proc)
    return proc


def wait_for(what: str, check, timeout: float = 20.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise SystemExit(f"bench: {what} did not happen within {timeout:.0f} s")


# ---------------------------------------------------------------- /proc measurements

def cpu_ticks(pid: int) -> int:
    """utime + stime of a process (all its threads), in clock ticks."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def cpu_seconds(pids) -> float:
    total = 0
    for pid in pids:
        try:
            total += cpu_ticks(pid)
        except FileNotFoundError:
            pass
    return total / CLK_TCK


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def udp_receive_buffer_errors() -> int:
    """UDP datagrams the kernel dropped because a socket's receive buffer was full, on
    the whole box (every sipp process and the server under test): `Udp: RcvbufErrors`."""
    with open("/proc/net/snmp") as f:
        rows = [line.split() for line in f if line.startswith("Udp:")]
    if len(rows) < 2 or "RcvbufErrors" not in rows[0]:
        return 0
    return int(rows[1][rows[0].index("RcvbufErrors")])


def children_of(pid: int) -> list[int]:
    """pid and every descendant (Kamailio forks its workers)."""
    result = [pid]
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (FileNotFoundError, ProcessLookupError, IndexError):
                continue
            if ppid == pid:
                result += children_of(int(entry))
    return result


# ---------------------------------------------------------------- Redis

class Redis:
    def __init__(self, workdir: str):
        self.port = free_port()
        self.proc = spawn(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "no", "--daemonize", "no"],
            workdir, "redis",
        )
        wait_for("redis-server answering", lambda: self.cli("PING") == "PONG")
        self.url = f"redis://127.0.0.1:{self.port}/"
        self.ports = [self.port]
        self.procs = [self.proc]

    def cli(self, *args: str) -> str:
        out = subprocess.run(
            ["redis-cli", "-p", str(self.port), *args],
            capture_output=True, text=True,
        )
        return out.stdout.strip()

    def info(self, section: str) -> dict[str, str]:
        fields = {}
        for line in self.cli("INFO", section).splitlines():
            if ":" in line and not line.startswith("#"):
                key, value = line.split(":", 1)
                fields[key] = value.strip()
        return fields

    def commandstats(self) -> dict[str, int]:
        """calls per command name (cmdstat_evalsha -> evalsha)."""
        counts = {}
        for key, value in self.info("commandstats").items():
            match = re.match(r"calls=(\d+)", value)
            if key.startswith("cmdstat_") and match:
                counts[key[len("cmdstat_"):]] = int(match.group(1))
        return counts

    def used_memory(self) -> int:
        return int(self.info("memory")["used_memory"])

    def net_bytes(self) -> tuple[int, int]:
        """Bytes Redis has received and sent on the network so far."""
        stats = self.info("stats")
        return int(stats["total_net_input_bytes"]), int(stats["total_net_output_bytes"])

    def program_routes(self, routes: list[tuple]) -> None:
        """Writes the routing table the way the operator's full sync leaves it
        (routing/src/redis_table.rs): entries and owners hashes, generation, epoch, and
        a change notification. The edge loads it when it starts (and would reload on the
        notification or its 5 s version poll). Each route is (number, voiceUrl) or
        (number, voiceUrl, referUrl)."""
        for number, voice_url, *refer in routes:
            owner = f"bench/{number.lstrip('+')}"
            route = {
                "key": {"kind": "number", "value": number},
                "owner": owner,
                "priority": 0,
                "voice": {"url": voice_url, "method": "POST"},
            }
            if refer:
                route["refer"] = {"url": refer[0], "method": "POST"}
            field = f"n:{number}"
            self.cli("HSET", "sy:v1:{routes}:entries", field, json.dumps(route))
            self.cli("HSET", "sy:v1:{routes}:owners", owner, field)
        epoch = os.urandom(8).hex()
        self.cli("SET", "sy:v1:{routes}:epoch", epoch)
        generation = self.cli("INCR", "sy:v1:{routes}:generation")
        self.cli("PUBLISH", "sy:v1:routes:changes", f"{epoch}:{generation}")


def free_cluster_port() -> int:
    """A port for a cluster node: its cluster bus listens 10,000 higher, so that must be
    free too (and the port at most 55535)."""
    while True:
        port = free_port()
        if port > 55535:
            continue
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as bus:
                bus.bind(("127.0.0.1", port + 10000))
            return port
        except OSError:
            continue


class RedisCluster(Redis):
    """A Redis Cluster of `masters` masters (no replicas) on free ports, joined by
    `redis-cli --cluster create`, as the cluster tests make one (tests/src/redis_cluster.rs).
    Everything a single server answers for the benchmark (commands run, memory) is the sum
    over the masters; `cli` follows redirections to the slot's master."""

    def __init__(self, workdir: str, masters: int = 3):
        self.ports = [free_cluster_port() for _ in range(masters)]
        self.procs = []
        for port in self.ports:
            node_dir = os.path.join(workdir, f"redis-cluster-{port}")
            os.makedirs(node_dir, exist_ok=True)
            self.procs.append(spawn(
                ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", node_dir,
                 "--cluster-enabled", "yes", "--cluster-node-timeout", "5000",
                 "--save", "", "--appendonly", "no", "--daemonize", "no"],
                workdir, f"redis-{port}",
            ))
        for port in self.ports:
            wait_for("a cluster node answering", lambda p=port: self.node_cli(p, "PING") == "PONG")
        created = subprocess.run(
            ["redis-cli", "--cluster", "create", *[f"127.0.0.1:{p}" for p in self.ports],
             "--cluster-replicas", "0", "--cluster-yes"], capture_output=True, text=True)
        if created.returncode != 0:
            raise SystemExit(f"bench: redis-cli --cluster create failed:\n{created.stdout}"
                             f"{created.stderr}")
        wait_for("the cluster ok", lambda: all(
            "cluster_state:ok" in self.node_cli(p, "CLUSTER", "INFO") for p in self.ports), 30)
        self.port = self.ports[0]
        self.proc = self.procs[0]
        self.url = "redis+cluster://" + ",".join(f"127.0.0.1:{p}" for p in self.ports)

    @staticmethod
    def node_cli(port: int, *args: str) -> str:
        out = subprocess.run(["redis-cli", "-p", str(port), *args],
                             capture_output=True, text=True)
        return out.stdout.strip()

    def cli(self, *args: str) -> str:
        out = subprocess.run(["redis-cli", "-c", "-p", str(self.port), *args],
                             capture_output=True, text=True)
        return out.stdout.strip()

    def info_of(self, port: int, section: str) -> dict[str, str]:
        fields = {}
        for line in self.node_cli(port, "INFO", section).splitlines():
            if ":" in line and not line.startswith("#"):
                key, value = line.split(":", 1)
                fields[key] = value.strip()
        return fields

    def commandstats(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for port in self.ports:
            for key, value in self.info_of(port, "commandstats").items():
                match = re.match(r"calls=(\d+)", value)
                if key.startswith("cmdstat_") and match:
                    name = key[len("cmdstat_"):]
                    counts[name] = counts.get(name, 0) + int(match.group(1))
        return counts

    def used_memory(self) -> int:
        return sum(int(self.info_of(p, "memory")["used_memory"]) for p in self.ports)

    def net_bytes(self) -> tuple[int, int]:
        stats = [self.info_of(p, "stats") for p in self.ports]
        return (sum(int(s["total_net_input_bytes"]) for s in stats),
                sum(int(s["total_net_output_bytes"]) for s in stats))


# ---------------------------------------------------------------- servers under test

def dial_sip(uri: str) -> str:
    return f'<?xml version="1.0"?><Response><Dial><Sip>{uri}</Sip></Dial></Response>'


class AppServer:
    """Fixed RCML documents by path; by default one per sipp pair: /p<k> dials the
    callee of pair k."""

    def __init__(self, workdir: str, callees: list[int], docs: dict | None = None):
        port_file = os.path.join(workdir, "app.port")
        doc_file = os.path.join(workdir, "app.json")
        if docs is None:
            docs = {f"/p{k}": dial_sip(f"sip:callee@127.0.0.1:{port}")
                    for k, port in enumerate(callees)}
        with open(doc_file, "w") as f:
            json.dump(docs, f)
        # The port file of an earlier app server of this run must not be taken for this
        # one's.
        if os.path.exists(port_file):
            os.remove(port_file)
        self.proc = spawn(
            [sys.executable, os.path.join(BENCH, "app_server.py"), port_file, doc_file],
            workdir, "app",
        )
        wait_for("the RCML app server listening",
                 lambda: os.path.exists(port_file) and os.path.getsize(port_file) > 0)
        with open(port_file) as f:
            self.port = int(f.read())

    def url(self, k: int, prefix: str = "p") -> str:
        return f"http://127.0.0.1:{self.port}/{prefix}{k}"


class Edge:
    def __init__(self, binary: str, workdir: str, redis: Redis, name: str = "edge"):
        self.sip_port = free_port()
        self.metrics_port = free_port()
        # Default log level (info), as deployed; the log goes to a file.
        env = {k: v for k, v in os.environ.items() if k != "RUST_LOG"}
        # All load comes from one address (sipp on loopback): no per-source rate limit,
        # which would answer it 503 (docs/security.md; a trunk is exempted the same way).
        self.proc = spawn(
            [binary, "--sip-listen", f"127.0.0.1:{self.sip_port}",
             "--metrics-listen", f"127.0.0.1:{self.metrics_port}",
             "--redis-url", redis.url, "--pod-name", "bench-edge",
             "--rate-limit-per-source", "0"],
            workdir, name, env=env,
        )
        wait_for("the edge ready (routing table loaded)", self.ready)
        self.pid = self.proc.pid

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.metrics_port}{path}", timeout=2
            ) as r:
                return r.status, r.read().decode()
        except OSError:
            return 0, ""

    def ready(self) -> bool:
        if self.proc.poll() is not None:
            raise SystemExit("bench: the edge exited; see its log")
        return self.get("/readyz")[0] == 200

    def metric(self, sample: str) -> float:
        for line in self.get("/metrics")[1].splitlines():
            if line.startswith(sample + " "):
                return float(line.split()[-1])
        return 0.0

    def histogram(self, name: str, match: str = "") -> dict:
        """Cumulative bucket counts of histogram `name`, summed over the series whose
        labels contain `match`: {upper bound in seconds: count}."""
        buckets: dict = {}
        for line in self.get("/metrics")[1].splitlines():
            if line.startswith(name + "_bucket{") and match in line:
                le = line.split('le="', 1)[1].split('"', 1)[0]
                bound = float("inf") if le == "+Inf" else float(le)
                buckets[bound] = buckets.get(bound, 0.0) + float(line.split()[-1])
        return buckets

    def dropped(self) -> int:
        """SIP messages the edge dropped so far, every reason (its inbound queue full
        under overload, unparseable, ...)."""
        total = 0.0
        for line in self.get("/metrics")[1].splitlines():
            if line.startswith("switchyard_edge_sip_messages_dropped_total"):
                total += float(line.split()[-1])
        return int(total)

    def pids(self) -> list[int]:
        return [self.pid]


class Kamailio:
    def __init__(self, workdir: str, callees: list[int]):
        # One proxy for every sipp pair, as for the edge: the route block sends each
        # INVITE to the callee of the number dialled (the @CALLEES@ lines).
        self.port = free_port()
        with open(os.path.join(BENCH, "kamailio.cfg")) as f:
            template = f.read()
        dispatch = "\n".join(
            f'\tif ($rU == "+{NUMBER_BASE + k}") {{ $du = "sip:127.0.0.1:{port}"; }}'
            for k, port in enumerate(callees)
        )
        config = template.replace("@PORT@", str(self.port)).replace("@CALLEES@", dispatch)
        path = os.path.join(workdir, "kamailio.cfg")
        with open(path, "w") as f:
            f.write(config)
        check = subprocess.run(["kamailio", "-c", "-f", path], capture_output=True, text=True)
        if check.returncode != 0:
            raise SystemExit(f"bench: kamailio.cfg does not check:\n{check.stderr}")
        # -DD: stay in the foreground but fork the workers; -E: log to stderr (the log file).
        self.proc = spawn(["kamailio", "-DD", "-E", "-f", path, "-Y", workdir, "-P",
                           os.path.join(workdir, "kamailio.pid"),
                           "-m", "256", "-M", "16"], workdir, "kamailio")
        time.sleep(1.5)
        if self.proc.poll() is not None:
            raise SystemExit("bench: kamailio exited; see its log")
        self.pid = self.proc.pid
        self.sip_port = self.port

    def pids(self) -> list[int]:
        return children_of(self.pid)


# ---------------------------------------------------------------- sipp

class Uas:
    """A sipp server (callee) on its own port; by default the benchmark's answering
    callee, serving calls until stopped. `extra` adds sipp arguments (e.g. `-m N` to
    exit after N calls, with statistics in a CSV)."""

    def __init__(self, workdir: str, name: str, scenario: str | None = None,
                 extra: tuple = (), port: int | None = None):
        self.port = port or free_port()
        self.proc = spawn(
            ["sipp", "-sf", scenario or os.path.join(SCENARIOS, "uas_answer.xml"),
             "-i", "127.0.0.1", "-p", str(self.port), "-t", "u1", "-nostdin",
             "-max_recv_loops", "5000", "-max_sched_loops", "5000", *extra],
            workdir, name,
        )
        # Ready once sipp holds its UDP port.
        def bound() -> bool:
            try:
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                    s.bind(("127.0.0.1", self.port))
                return False
            except OSError:
                return True
        wait_for("a sipp callee bound", bound, 10)


def read_stat(path: str) -> tuple[int, int]:
    """(successful, failed) calls from the last line of a sipp -trace_stat CSV; (0, 0)
    when sipp wrote none."""
    if not os.path.exists(path):
        return 0, 0
    with open(path) as f:
        rows = [line.rstrip("\n").split(";") for line in f if line.strip()]
    if len(rows) < 2:
        return 0, 0
    header, last = rows[0], rows[-1]
    return (int(last[header.index("SuccessfulCall(C)")]),
            int(last[header.index("FailedCall(C)")]))


def run_callers(workdir: str, target_port: int, pairs: int, rate: float, calls: int,
                hold_ms: int, tag: str, server_pids, sample=None,
                scenario: str = os.path.join(SCENARIOS, "uac_call.xml"),
                number_base: int = NUMBER_BASE, redis_pids=()) -> dict:
    """Runs one sipp caller per pair (rate and calls split evenly), each dialling its own
    number, and measures the server under test over the run (and the CPU of
    `redis_pids`, the redis-server processes behind it)."""
    per_rate = rate / pairs
    per_calls = max(1, calls // pairs)
    stepdir = os.path.join(workdir, tag)
    os.makedirs(stepdir, exist_ok=True)
    expected_s = per_calls / per_rate + hold_ms / 1000
    cpu0 = cpu_seconds(server_pids)
    redis_cpu0 = cpu_seconds(redis_pids)
    rcvbuf0 = udp_receive_buffer_errors()
    procs = []
    t0 = time.time()
    for k in range(pairs):
        args = ["sipp", "-sf", scenario,
                "-s", f"+{number_base + k}", "-i", "127.0.0.1", "-p", str(free_port()),
                "-t", "u1", "-r", f"{per_rate:g}", "-m", str(per_calls),
                "-d", str(hold_ms), "-l", str(per_calls + 10),
                "-max_recv_loops", "5000", "-max_sched_loops", "5000",
                # A callee's 200 retransmitted (its ACK late or lost in a UDP buffer of
                # the loaded box) may reach the caller during the hold; sipp aborts the
                # call on it by default, failing calls the server carried correctly. A
                # call that really goes wrong still never completes and is counted.
                "-default_behaviors", "all,-abortunexp",
                "-timeout", f"{int(expected_s * 3 + 30)}s", "-nostdin",
                "-trace_stat", "-stf", f"stat{k}.csv", "-fd", "1",
                "-trace_rtt", "-rtt_freq", "1",
                f"127.0.0.1:{target_port}"]
        out = open(os.path.join(stepdir, f"uac{k}.log"), "wb")
        proc = subprocess.Popen(args, cwd=stepdir, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
        started.append(proc)
        procs.append(proc)
    sipp_pids = [p.pid for p in procs]
    sipp_cpu0 = cpu_seconds(sipp_pids)
    sipp_cpu = sipp_cpu0
    samples = []
    # sipp's own -timeout did not always stop a caller whose calls were stuck (seen once
    # past an overloaded step, with abortunexp off): past this the step is given up and
    # its unfinished calls count as not completed.
    deadline = t0 + expected_s * 3 + 60
    while any(p.poll() is None for p in procs):
        if time.time() > deadline:
            for p in procs:
                if p.poll() is None:
                    p.terminate()
        sipp_cpu = max(sipp_cpu, cpu_seconds(sipp_pids))
        if sample:
            samples.append(sample())
        time.sleep(0.5 if sample else 0.05)
    elapsed = time.time() - t0
    cpu = cpu_seconds(server_pids) - cpu0
    redis_cpu = cpu_seconds(redis_pids) - redis_cpu0
    ok = failed = 0
    rtts = []
    for k in range(pairs):
        good, bad = read_stat(os.path.join(stepdir, f"stat{k}.csv"))
        ok += good
        failed += bad
    for name in os.listdir(stepdir):
        if name.endswith("_rtt.csv"):
            with open(os.path.join(stepdir, name)) as f:
                for line in f:
                    parts = line.strip().split(";")
                    try:
                        rtts.append((float(parts[0]), float(parts[1])))
                    except (ValueError, IndexError):
                        continue
    attempted = per_calls * pairs
    setups = sorted(r for _, r in rtts)
    times = sorted(t for t, _ in rtts)
    # The rate the callers really sustained: answered calls over the span of answers.
    span = (times[-1] - times[0]) / 1000 if len(times) > 1 else 0
    achieved = (len(times) - 1) / span if span > 0 else 0.0
    pct = lambda p: setups[min(len(setups) - 1, int(len(setups) * p))] if setups else None
    return {
        "rate": rate, "attempted": attempted, "ok": ok, "failed": failed,
        "completed": ok / attempted if attempted else 0.0,
        "achieved_rate": achieved, "elapsed": elapsed, "cpu_s": cpu, "redis_cpu_s": redis_cpu,
        "cpu_us_per_call": cpu * 1e6 / ok if ok else None,
        "redis_cpu_us_per_call": redis_cpu * 1e6 / ok if ok and redis_pids else None,
        "sipp_cpu_pct": (sipp_cpu - sipp_cpu0) / elapsed * 100 / pairs if elapsed else 0,
        "p50": pct(0.50), "p95": pct(0.95), "p99": pct(0.99),
        "samples": samples, "udp_rcvbuf_errors": udp_receive_buffer_errors() - rcvbuf0,
    }


def sustained(step: dict) -> bool:
    return step["completed"] >= 0.999 and step["achieved_rate"] >= 0.95 * step["rate"]


# ---------------------------------------------------------------- scenarios

class TransferPeers:
    """Ports and documents of the transfer scenario, one trio per pair: number
    +1555020000<k> (voiceUrl /t<k>) dials Bob k; its referUrl (/r<k>) dials
    `sip:{{ReferTarget}}@` Carol k (filled in by the app server from the POSTed
    parameters), so the token Bob puts in Refer-To's user part reaches Carol's
    Request-URI. Bob and Carol are started per step (`transfer_step`)."""

    def __init__(self, pairs: int):
        self.bobs = [free_port() for _ in range(pairs)]
        self.carols = [free_port() for _ in range(pairs)]

    def documents(self) -> dict[str, str]:
        docs = {}
        for k, (bob, carol) in enumerate(zip(self.bobs, self.carols)):
            docs[f"/t{k}"] = dial_sip(f"sip:bob@127.0.0.1:{bob}")
            docs[f"/r{k}"] = dial_sip(f"sip:{{{{ReferTarget}}}}@127.0.0.1:{carol}")
        return docs

    def routes(self, app: "AppServer") -> list[tuple[str, str, str]]:
        return [(f"+{TRANSFER_BASE + k}", app.url(k, "t"), app.url(k, "r"))
                for k in range(len(self.bobs))]


def setup_edge(binary: str, workdir: str, pairs: int, transfers: bool = False,
               cluster: bool = False):
    """redis-server (or a three-master Redis Cluster), the basic calls' callees, the app
    server and the edge; with `transfers`, also the transfer scenario's numbers and
    documents (its peers are started by each step)."""
    redis = RedisCluster(workdir) if cluster else Redis(workdir)
    callees = [Uas(workdir, f"uas{k}") for k in range(pairs)]
    peers = TransferPeers(pairs) if transfers else None
    docs = {f"/p{k}": dial_sip(f"sip:callee@127.0.0.1:{c.port}")
            for k, c in enumerate(callees)}
    if peers:
        docs.update(peers.documents())
    app = AppServer(workdir, [], docs)
    routes = [(f"+{NUMBER_BASE + k}", app.url(k)) for k in range(pairs)]
    if peers:
        routes += peers.routes(app)
    redis.program_routes(routes)
    edge = Edge(binary, workdir, redis, "edge-cluster" if cluster else "edge")
    return redis, callees, app, edge, peers


def smoke(binary: str) -> int:
    workdir = tempfile.mkdtemp(prefix="switchyard-bench-smoke-")
    redis, _, _, edge, peers = setup_edge(binary, workdir, 1, transfers=True)
    calls = 20
    step = run_callers(workdir, edge.sip_port, 1, 20, calls, 100, "smoke", edge.pids())
    commands = sum(redis.commandstats().values())
    log(f"smoke: {step['ok']}/{step['attempted']} calls completed, {step['failed']} failed, "
        f"setup p50 {fmt_ms(step['p50'])} p99 {fmt_ms(step['p99'])}, "
        f"edge CPU {fmt_int(step['cpu_us_per_call'])} us/call, {commands} Redis commands")
    if step["ok"] != calls or step["failed"]:
        log(f"smoke FAILED: see {workdir}")
        return 1
    # A few seed transfers under the packet capture: the transfer scenario and its
    # REFER-to-INVITE pairing work, every REFER found its target INVITE.
    transfers = 5
    step = transfer_step(workdir, edge, redis, peers, 10, transfers, "smoke-transfer")
    log_transfer_step("smoke", step)
    if step["ok"] != transfers or step["refers"] != transfers or step["unmatched"]:
        log(f"smoke FAILED (transfers): see {workdir}")
        return 1
    shutil.rmtree(workdir, ignore_errors=True)
    return 0


def fmt_ms(value) -> str:
    return "n/a" if value is None else f"{value:.2f} ms"


def fmt_bound(seconds) -> str:
    """A histogram bucket bound from `bucket_quantile`, as "<= 25 ms"."""
    return "–" if seconds is None else f"<= {seconds * 1000:g} ms"


def fmt_int(value) -> str:
    return "n/a" if value is None else f"{value:,.0f}"


def stop(*procs) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


def bucket_quantile(before: dict, after: dict, q: float):
    """The upper bound (seconds) of the histogram bucket holding quantile `q` of what was
    observed between two scrapes: "p99 <= bound". None when nothing was observed."""
    delta = sorted((bound, count - before.get(bound, 0.0)) for bound, count in after.items())
    total = delta[-1][1] if delta else 0.0
    if total <= 0:
        return None
    return next(bound for bound, count in delta if count >= q * total)


# Where a call's set-up time goes inside the edge, from its own histograms.
INSIDE_THE_EDGE = {
    "rcml": ("switchyard_edge_rcml_fetch_duration_seconds", 'purpose="voice"'),
    "store": ("switchyard_edge_store_duration_seconds", ""),
}


def inside_the_edge(edge: "Edge") -> dict:
    return {key: edge.histogram(name, match) for key, (name, match) in INSIDE_THE_EDGE.items()}


def commands_per_call(before: dict, after: dict, calls: int) -> tuple[dict, float, float]:
    """Commands Redis executed per call by name (scripts' own commands included), their
    total per call, and the scripts (EVALSHA) per call."""
    delta = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    delta = {k: v for k, v in delta.items() if v > 0 and k not in ("info", "cluster|info")}
    total = sum(delta.values())
    return ({k: v / calls for k, v in sorted(delta.items())}, total / calls,
            delta.get("evalsha", 0) / calls)


def monitor_round_trips(workdir: str, redis: Redis, name: str, run) -> dict:
    """What the edge sends to Redis while `run()` (returning a step with `ok`) places a
    few calls at a low rate, from MONITOR on every node. MONITOR marks commands run
    inside a script `[... lua]`, so they are told apart from the ones the edge sent; only
    commands on a call's keys count (not the timer poll, which names a bucket's timer
    set, nor the routing-table version check: neither grows with calls). Every store
    operation is one command or script (docs/call-state.md), so round trips = commands
    sent."""
    # One MONITOR per node (a cluster's masters each see the calls of their slots).
    paths, monitors = [], []
    for port in redis.ports:
        path = os.path.join(workdir, f"monitor-{name}-{port}.log")
        paths.append(path)
        out = open(path, "wb")
        monitor = subprocess.Popen(["redis-cli", "-p", str(port), "MONITOR"],
                                   stdout=out, stderr=subprocess.DEVNULL)
        out.close()
        started.append(monitor)
        monitors.append(monitor)
    time.sleep(0.3)
    step = run()
    time.sleep(0.5)
    stop(*monitors)
    sent: dict[str, int] = {}
    in_scripts = 0
    for path in paths:
        with open(path, errors="replace") as f:
            for line in f:
                if "sy:v2:call:" not in line and "sy:v2:dlg:" not in line:
                    continue
                # The timer poll's script has a bucket's timer set as its only key.
                if re.search(r'"EVALSHA" "[0-9a-f]+" "1" "sy:v2:timers:', line):
                    continue
                if " lua]" in line:
                    in_scripts += 1
                    continue
                match = re.search(r'\] "([A-Za-z]+)"', line)
                if match:
                    name = match.group(1).lower()
                    sent[name] = sent.get(name, 0) + 1
    ok = max(1, step["ok"])
    total = sum(sent.values())
    return {
        "calls": step["ok"], "sent": {k: v / ok for k, v in sorted(sent.items())},
        "sent_per_call": total / ok, "in_scripts_per_call": in_scripts / ok,
        "round_trips_per_call": total / ok,
    }


def net_bytes_per_call(before: tuple[int, int], after: tuple[int, int], calls: int):
    """Redis network bytes in (from the edge) and out (to it) per call, over a step; the
    timer poll and routing-table checks of the step's duration are included."""
    if not calls:
        return None
    return ((after[0] - before[0]) / calls, (after[1] - before[1]) / calls)


def trace_round_trips(workdir: str, redis: Redis, target_port: int, pairs: int,
                      calls: int) -> dict:
    """Round trips per basic call: `calls` calls at 10 calls/s under MONITOR."""
    return monitor_round_trips(workdir, redis, "basic", lambda: run_callers(
        workdir, target_port, pairs, 10, calls, 100, "monitor", []))


def ramp(workdir, target_port, pairs, rates, step_s, hold_ms, pids, tag, redis=None,
         edge=None):
    """Steps up the offered rate until a step is not sustained (<99.9% completed, or the
    callers could not keep the rate)."""
    steps = []
    for rate in rates:
        before = redis.commandstats() if redis else None
        dropped = edge.dropped() if edge else 0
        step = run_callers(workdir, target_port, pairs, rate, int(rate * step_s), hold_ms,
                           f"{tag}-{rate}", pids,
                           redis_pids=[p.pid for p in redis.procs] if redis else ())
        if redis:
            step["commands"] = commands_per_call(before, redis.commandstats(),
                                                 max(1, step["ok"]))
        if edge:
            step["edge_dropped"] = edge.dropped() - dropped
        steps.append(step)
        log(f"{tag} {rate} cps: {step['ok']}/{step['attempted']} ok, achieved "
            f"{step['achieved_rate']:.0f} cps, p50 {fmt_ms(step['p50'])} p99 "
            f"{fmt_ms(step['p99'])}, {fmt_int(step['cpu_us_per_call'])} us CPU/call "
            f"(Redis {fmt_int(step.get('redis_cpu_us_per_call'))} us), "
            f"callers at {step['sipp_cpu_pct']:.0f}% CPU each; UDP datagrams the kernel "
            f"dropped (whole box) {step['udp_rcvbuf_errors']}, the edge dropped "
            f"{step.get('edge_dropped', 'n/a')}")
        if not sustained(step):
            break
        time.sleep(1)
    return steps


def top_rate(steps) -> float:
    good = [s["rate"] for s in steps if sustained(s)]
    return max(good) if good else 0


# ---------------------------------------------------------------- transfers (scenario 2)

def transferor_scenario(workdir: str) -> str:
    """Bob: tests/scenarios/uas_transferor.xml with a token per call in Refer-To's user
    part (`t-<sipp pid>-<call number>`), written to the work directory."""
    with open(os.path.join(TEST_SCENARIOS, "uas_transferor.xml")) as f:
        text = f.read()
    plain = "Refer-To: <sip:[$target]@"
    if text.count(plain) != 1:
        raise SystemExit(f"bench: tests/scenarios/uas_transferor.xml has no single "
                         f"'{plain}' to put the per-call token in")
    path = os.path.join(workdir, "uas_transferor_bench.xml")
    with open(path, "w") as f:
        f.write(text.replace(plain, "Refer-To: <sip:[$target]-[pid]-[call_number]@"))
    return path


class ReferCapture:
    """tcpdump on loopback, keeping only REFERs (UDP payload starting "REFE") and INVITEs
    sent to the transfer targets' ports ("INVI"): the kernel timestamps both where they
    are captured, with one clock, in nanoseconds."""

    def __init__(self, stepdir: str, target_ports: list[int]):
        self.path = os.path.join(stepdir, "refer.pcap")
        self.log = os.path.join(stepdir, "tcpdump.log")
        targets = " or ".join(f"dst port {p}" for p in target_ports)
        bpf = (f"udp and (udp[8:4] = 0x52454645 or "
               f"(({targets}) and udp[8:4] = 0x494e5649))")
        out = open(self.log, "wb")
        # --immediate-mode: each packet is handed over at once, so none is still in the
        # kernel's ring when tcpdump is stopped; the filter keeps that to two a transfer.
        self.proc = subprocess.Popen(
            ["tcpdump", "-i", "lo", "-n", "-s", "4096", "-B", "8192", "--immediate-mode",
             "--time-stamp-precision=nano", "-w", self.path, bpf],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        started.append(self.proc)
        wait_for("tcpdump listening on lo", self.listening, 10)

    def listening(self) -> bool:
        if self.proc.poll() is not None:
            raise SystemExit(f"bench: tcpdump exited; see {self.log}")
        with open(self.log, errors="replace") as f:
            return "listening on" in f.read()

    def stop(self) -> int:
        """Stops the capture; returns the packets the kernel dropped."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        with open(self.log, errors="replace") as f:
            match = re.search(r"(\d+) packets? dropped by kernel", f.read())
        return int(match.group(1)) if match else -1

    def latencies_ms(self) -> tuple[list[float], int]:
        """REFER-to-target-INVITE latencies (first REFER to first INVITE of each token;
        retransmissions are ignored), and how many REFERs had no target INVITE."""
        refers: dict[bytes, float] = {}
        invites: dict[bytes, float] = {}
        for at, _, _, payload in pcap.udp_payloads(self.path):
            if payload.startswith(b"REFER "):
                match = re.search(rb"(?im)^(?:refer-to|r)[ \t]*:[ \t]*<?sip:(t-[^@>;]+)@",
                                  payload)
                if match:
                    refers.setdefault(match.group(1), at)
            elif payload.startswith(b"INVITE "):
                match = re.match(rb"INVITE sip:(t-[^@>; ]+)@", payload)
                if match:
                    invites.setdefault(match.group(1), at)
        latencies = sorted((invites[t] - at) * 1000 for t, at in refers.items()
                           if t in invites)
        return latencies, len(refers) - len(latencies)


def percentile(values: list[float], p: float):
    return values[min(len(values) - 1, int(len(values) * p))] if values else None


def transfer_step(workdir: str, edge: "Edge", redis: "Redis", peers: TransferPeers,
                  rate: float, transfers: int, tag: str) -> dict:
    """`transfers` seed flows at `rate` (split over the trios): Alice (the tests'
    uac_transferee.xml) calls number t<k>, Bob answers and after 200 ms sends REFER,
    takes 202 and the NOTIFYs and gets BYE; the refer application dials Carol (the
    tests' uas_target.xml), who answers; Alice is re-INVITEd with Carol's offer, talks
    300 ms and hangs up. A transfer counts as completed when all three sipp processes
    count it successful (the least of their three counts)."""
    pairs = len(peers.bobs)
    per_calls = max(1, transfers // pairs)
    stepdir = os.path.join(workdir, tag)
    os.makedirs(stepdir, exist_ok=True)
    bob_xml = transferor_scenario(stepdir)
    carol_xml = os.path.join(TEST_SCENARIOS, "uas_target.xml")
    servers = []
    for k in range(pairs):
        for name, xml, port, extra in (
                ("carol", carol_xml, peers.carols[k], ()),
                ("bob", bob_xml, peers.bobs[k], ("-set", "target", "t"))):
            servers.append((name, k, Uas(
                stepdir, f"{name}{k}", xml, port=port,
                extra=("-m", str(per_calls), "-default_behaviors", "all,-abortunexp",
                       "-trace_stat", "-stf", f"{name}{k}.csv", "-fd", "1", *extra))))
    capture = ReferCapture(stepdir, peers.carols)
    before, bytes_before = redis.commandstats(), redis.net_bytes()
    edge_dropped = edge.dropped()
    alice = run_callers(workdir, edge.sip_port, pairs, rate, transfers, 1000, tag,
                        edge.pids(), scenario=os.path.join(TEST_SCENARIOS,
                                                           "uac_transferee.xml"),
                        number_base=TRANSFER_BASE,
                        redis_pids=[p.pid for p in redis.procs])
    # Bob and Carol exit after their last call; those waiting for a call that never
    # came are stopped (their statistics count what they saw).
    deadline = time.time() + 15
    for _, _, server in servers:
        try:
            server.proc.wait(timeout=max(0.1, deadline - time.time()))
        except subprocess.TimeoutExpired:
            server.proc.terminate()
            server.proc.wait(timeout=10)
    dropped = capture.stop()
    counts = {"alice": alice["ok"], "bob": 0, "carol": 0}
    for name, k, _ in servers:
        counts[name] += read_stat(os.path.join(stepdir, f"{name}{k}.csv"))[0]
    latencies, unmatched = capture.latencies_ms()
    done = min(counts.values())
    commands = commands_per_call(before, redis.commandstats(), max(1, done))
    return {
        "rate": rate, "attempted": alice["attempted"], "ok": done, "counts": counts,
        "failed": alice["failed"], "completed": done / alice["attempted"],
        "achieved_rate": alice["achieved_rate"],
        "cpu_us_per_call": alice["cpu_s"] * 1e6 / done if done else None,
        "redis_cpu_us_per_call": alice["redis_cpu_s"] * 1e6 / done if done else None,
        "sipp_cpu_pct": alice["sipp_cpu_pct"],
        "refers": len(latencies) + unmatched, "unmatched": unmatched,
        "dropped": dropped,
        "p50": percentile(latencies, 0.50), "p95": percentile(latencies, 0.95),
        "p99": percentile(latencies, 0.99),
        "max": latencies[-1] if latencies else None,
        "commands_per_transfer": commands[1],
        "net_bytes_per_transfer": net_bytes_per_call(bytes_before, redis.net_bytes(), done),
        "edge_dropped": edge.dropped() - edge_dropped,
        "udp_rcvbuf_errors": alice["udp_rcvbuf_errors"],
    }


def settle(edge: "Edge", timeout: float = 120) -> None:
    """Waits until the edge has no call or transfer up, then for 64·T1 + 1 s more so the
    transactions of the calls that ended last are gone too."""
    log("waiting for the edge to settle after an overloaded step")
    deadline = time.time() + timeout
    while time.time() < deadline and (edge.metric("switchyard_edge_calls_active")
                                      or edge.metric("switchyard_edge_transfers_active")):
        time.sleep(1)
    time.sleep(33)


def log_transfer_step(tag: str, step: dict) -> None:
    log(f"{tag} {step['rate']:g}/s: {step['ok']}/{step['attempted']} transferred "
        f"(alice/bob/carol {step['counts']['alice']}/{step['counts']['bob']}/"
        f"{step['counts']['carol']}), achieved {step['achieved_rate']:.0f}/s, REFER to "
        f"target INVITE p50 {fmt_ms(step['p50'])} p99 {fmt_ms(step['p99'])} "
        f"({step['unmatched']} of {step['refers']} REFERs unmatched, "
        f"{step['dropped']} dropped), {fmt_int(step['cpu_us_per_call'])} us CPU/transfer; "
        f"UDP datagrams the kernel dropped (whole box) {step['udp_rcvbuf_errors']}, the "
        f"edge dropped {step['edge_dropped']}")


def transfer_ramp(workdir, edge, redis, peers, rates, step_s) -> tuple[list, dict | None]:
    """Steps up the offered transfer rate until one is not sustained, then measures the
    latency at half the top rate over twice a step's length."""
    steps = []
    for rate in rates:
        step = transfer_step(workdir, edge, redis, peers, rate, int(rate * step_s),
                             f"transfer-{rate}")
        log_transfer_step("transfer", step)
        steps.append(step)
        if not sustained(step):
            break
        time.sleep(1)
    top = top_rate(steps)
    if not top:
        return steps, None
    if not sustained(steps[-1]):
        # The overloaded step leaves calls and transactions behind (an unanswered BYE is
        # retransmitted for 64·T1) that would reach the next step's Bob and Carol, new
        # sipp processes on the same ports, as calls they never saw: wait them out.
        settle(edge)
    half = max(rates[0], round(top / 2 / 25) * 25)
    step = transfer_step(workdir, edge, redis, peers, half, int(half * step_s * 2),
                         "transfer-half")
    log_transfer_step("transfer half", step)
    return steps, step


def held_calls(workdir, edge: Edge, redis: Redis, pairs: int, count: int, rate: float):
    """Sets up `count` calls at `rate` and holds each long enough that all are up at once
    for 45 s after the last one is set up: longer than the 32 s (64 x T1) that a call's
    INVITE transactions stay in the Accepted state, so the end of the plateau shows what
    the held calls themselves cost, not the set-up traffic of the last 32 s."""
    ramp_s = count / rate
    hold_ms = int(ramp_s * 1000) + 45000
    rss0 = rss_kib(edge.pid)
    mem0 = redis.used_memory()
    t0 = time.time()

    def sample():
        return (time.time() - t0, edge.metric("switchyard_edge_calls_active"),
                rss_kib(edge.pid), redis.used_memory())

    step = run_callers(workdir, edge.sip_port, pairs, rate, count, hold_ms, "held",
                       edge.pids(), sample=sample)
    # Every call has ended: once the BYEs' transactions are gone too (32 s, 64 x T1),
    # whatever RSS is left above the idle level is not per held call (the allocator's
    # pages, or something that outlives calls).
    time.sleep(35)
    after = sample()
    samples = step["samples"]
    # The plateau's end: the last sample before calls started ending.
    full_samples = [s for s in samples if s[1] >= 0.999 * count] or samples or [(0, 0, rss0, mem0)]
    end = full_samples[-1]
    building = [s for s in samples if s[0] <= ramp_s + 1]
    levels = []
    for level in (1000, 2500, 5000, 7500, 10000):
        near = [s for s in building if s[1] >= level]
        if near:
            levels.append(near[0])
    return {
        "count": count, "rate": rate, "hold_ms": hold_ms, "ok": step["ok"],
        "failed": step["failed"], "peak_active": end[1], "rss0": rss0, "mem0": mem0,
        "rss_peak": max(s[2] for s in building) if building else end[2],
        "rss_end": end[2], "end_s": end[0], "ramp_s": ramp_s, "mem_peak": end[3],
        "redis_bytes_per_call": (end[3] - mem0) / end[1] if end[1] else None,
        "levels": levels, "after_s": after[0], "active_after": after[1],
        "rss_after": after[2], "mem_after": after[3],
    }


def versions() -> dict:
    def first_line(cmd):
        try:
            out = subprocess.run(cmd, capture_output=True, text=True)
            return (out.stdout or out.stderr).strip().splitlines()[0].strip()
        except (OSError, IndexError):
            return "n/a"
    model = "n/a"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as f:
        mem = f.readline().split()[1]
    return {
        "cpus": str(os.cpu_count()),
        "cpu": model,
        "memory": f"{int(mem) // 1024} MiB",
        "kernel": platform.release(),
        "rustc": first_line(["rustc", "--version"]),
        "sipp": first_line(["sipp", "-v"]).replace("SIPp ", ""),
        "redis": first_line(["redis-server", "--version"]),
        "kamailio": first_line(["kamailio", "-v"]),
        "python": platform.python_version(),
    }


SCENARIO_NAMES = ("held", "basic", "transfer", "cluster", "kamailio")
TRANSFER_RATES = [25, 50, 100, 150, 200, 250, 300, 400, 500, 600, 800, 1000]


def full(binary: str, results: str, pairs: int, step_s: float, held: int,
         held_rate: float, command: str, only: tuple = SCENARIO_NAMES) -> int:
    """Every scenario, then RESULTS.md. With `only` a subset (while developing): its
    figures are logged and kept in the work directory, RESULTS.md is left alone."""
    workdir = tempfile.mkdtemp(prefix="switchyard-bench-")
    log(f"work directory {workdir}")
    machine = versions()
    load_at_start = os.getloadavg()[0]
    started_at = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    rates = [100, 200, 300, 400, 500, 600, 800, 1000, 1200, 1400, 1700, 2000, 2500, 3000,
             3500, 4000]
    hold_ms = 300
    figures = {
        "machine": machine, "started": started_at, "command": command, "pairs": pairs,
        "step_s": step_s, "hold_ms": hold_ms,
    }

    # The edge: Redis store, RCML over HTTP from the local app server.
    redis, callees, app, edge, peers = setup_edge(binary, workdir, pairs, transfers=True)
    warm = run_callers(workdir, edge.sip_port, pairs, 20, 40, 100, "edge-warmup", edge.pids())
    log(f"warm-up: {warm['ok']}/{warm['attempted']} calls")
    # What an edge costs Redis with no calls at all: its timer poll (every bucket twice a
    # second) and routing-table version check.
    # The edge's own CPU in the same window is what one pod costs before its first call.
    idle_s = 10
    cpu0, cmds0 = cpu_seconds([p.pid for p in redis.procs]), redis.commandstats()
    edge_cpu0 = cpu_seconds(edge.pids())
    time.sleep(idle_s)
    idle_cmds = sum(redis.commandstats().values()) - sum(cmds0.values())
    figures["idle"] = {
        "redis_cpu_pct": (cpu_seconds([p.pid for p in redis.procs]) - cpu0) / idle_s * 100,
        "edge_cpu_pct": (cpu_seconds(edge.pids()) - edge_cpu0) / idle_s * 100,
        "commands_per_s": idle_cmds / idle_s,
    }
    log(f"an idle edge uses {figures['idle']['edge_cpu_pct']:.2f}% CPU and costs Redis "
        f"{figures['idle']['redis_cpu_pct']:.2f}% CPU, "
        f"{figures['idle']['commands_per_s']:.0f} commands/s")
    if "basic" in only:
        trace = trace_round_trips(workdir, redis, edge.sip_port, 1, 20)
        figures["trace"] = trace
        log(f"Redis per call: {trace['sent_per_call']:.2f} commands sent, "
            f"{trace['round_trips_per_call']:.2f} round trips, "
            f"{trace['in_scripts_per_call']:.2f} run inside scripts")
    if "held" in only:
        # (3) held calls first, on a Redis holding no ended calls yet (they stay 64 s).
        log(f"held calls: {held} at {held_rate:g} cps")
        held_result = held_calls(workdir, edge, redis, pairs, held, held_rate)
        figures["held"] = held_result
        log(f"held: {held_result['peak_active']:.0f} calls up, redis "
            f"{fmt_int(held_result['redis_bytes_per_call'])} B/call, edge RSS "
            f"{held_result['rss0']} -> {held_result['rss_peak']} (setting up) -> "
            f"{held_result['rss_end']} KiB (plateau end) -> {held_result['rss_after']} KiB "
            f"(all ended, {held_result['after_s']:.0f} s later)")
        time.sleep(2)
    half = 50
    if "basic" in only:
        # (1) basic calls: the ramp, then half the top rate.
        edge_steps = ramp(workdir, edge.sip_port, pairs, rates, step_s, hold_ms,
                          edge.pids(), "edge", redis, edge)
        edge_top = top_rate(edge_steps)
        half = max(50, round(edge_top / 2 / 50) * 50) if edge_top else 50
        before, bytes_before = redis.commandstats(), redis.net_bytes()
        hist_before = inside_the_edge(edge)
        edge_half = run_callers(workdir, edge.sip_port, pairs, half, int(half * step_s * 2),
                                hold_ms, "edge-half", edge.pids(),
                                redis_pids=[p.pid for p in redis.procs])
        hist_after = inside_the_edge(edge)
        edge_half["inside"] = {
            key: {q: bucket_quantile(hist_before[key], hist_after[key], q) for q in (0.5, 0.99)}
            for key in INSIDE_THE_EDGE
        }
        edge_half["commands"] = commands_per_call(before, redis.commandstats(),
                                                  max(1, edge_half["ok"]))
        edge_half["net_bytes_per_call"] = net_bytes_per_call(
            bytes_before, redis.net_bytes(), edge_half["ok"])
        inside = {f"{key} p{int(q * 100)}": fmt_bound(v)
                  for key, qs in edge_half["inside"].items() for q, v in qs.items()}
        log(f"edge at {half} cps: p99 {fmt_ms(edge_half['p99'])}, "
            f"{fmt_int(edge_half['cpu_us_per_call'])} us/call; inside the edge {inside}")
        figures.update(edge_steps=edge_steps, edge_top=edge_top, half=half,
                       edge_half=edge_half)
    if "transfer" in only:
        # (2) the seed transfer under load, on the same edge; first what one costs Redis.
        figures["transfer_trace"] = monitor_round_trips(
            workdir, redis, "transfer",
            lambda: transfer_step(workdir, edge, redis, peers, 5, 10, "transfer-monitor"))
        log(f"Redis per transfer: "
            f"{figures['transfer_trace']['round_trips_per_call']:.2f} round trips")
        transfer_steps, transfer_half = transfer_ramp(workdir, edge, redis, peers,
                                                      TRANSFER_RATES, step_s)
        figures.update(transfer_steps=transfer_steps,
                       transfer_top=top_rate(transfer_steps), transfer_half=transfer_half)
    stop(edge.proc, app.proc, *[c.proc for c in callees], redis.proc)

    if "cluster" in only:
        # The same edge and calls on a three-master Redis Cluster: round trips per call
        # and the ramp, beside the single server's above (docs/scaling.md).
        cluster, callees, app, edge, _ = setup_edge(binary, workdir, pairs, cluster=True)
        run_callers(workdir, edge.sip_port, pairs, 20, 40, 100, "cluster-warmup", edge.pids())
        cluster_trace = trace_round_trips(workdir, cluster, edge.sip_port, 1, 20)
        log(f"cluster, Redis per call: {cluster_trace['round_trips_per_call']:.2f} round "
            f"trips")
        cluster_steps = ramp(workdir, edge.sip_port, pairs, rates, step_s, hold_ms,
                             edge.pids(), "cluster", cluster, edge)
        figures.update(cluster_trace=cluster_trace, cluster_steps=cluster_steps,
                       cluster_top=top_rate(cluster_steps))
        stop(edge.proc, app.proc, *[c.proc for c in callees], *cluster.procs)

    if "kamailio" in only:
        # The baseline: Kamailio between the same callers and callees.
        callees = [Uas(workdir, f"kuas{k}") for k in range(pairs)]
        kam = Kamailio(workdir, [c.port for c in callees])
        run_callers(workdir, kam.sip_port, pairs, 20, 40, 100, "kam-warmup", kam.pids())
        kam_steps = ramp(workdir, kam.sip_port, pairs, rates, step_s, hold_ms, kam.pids(),
                         "kamailio")
        kam_half = run_callers(workdir, kam.sip_port, pairs, half, int(half * step_s * 2),
                               hold_ms, "kam-half", kam.pids())
        log(f"kamailio at {half} cps: {fmt_int(kam_half['cpu_us_per_call'])} us/call")
        stop(kam.proc, *[c.proc for c in callees])
        figures.update(kam_steps=kam_steps, kam_top=top_rate(kam_steps), kam_half=kam_half)

    machine["load"] = f"{load_at_start:.2f} / {os.getloadavg()[0]:.2f}"
    if set(only) != set(SCENARIO_NAMES):
        path = os.path.join(workdir, "results-partial.json")
        with open(path, "w") as f:
            json.dump(figures, f, indent=1)
        log(f"partial run ({', '.join(only)}): figures in {path}; RESULTS.md unchanged")
        return 0
    # Kept beside RESULTS.md so the document can be rebuilt (--rewrite) after editing
    # bench/profile.md, without measuring again.
    with open(os.path.join(BENCH, "results.json"), "w") as f:
        json.dump(figures, f, indent=1)
    write_results(results, figures)
    log(f"wrote {results} and bench/results.json; logs in {workdir}")
    return 0


def write_results(path: str, r: dict) -> None:
    m, eh, kh, held = r["machine"], r["edge_half"], r["kam_half"], r["held"]
    ratio = lambda a, b: f"{a / b:.2f}" if a and b else "n/a"
    cmds, cmd_total, _ = eh.get("commands", ({}, None, None))
    trace = r["trace"]
    trips = trace["round_trips_per_call"]
    edge_top_step = next((s for s in r["edge_steps"] if s["rate"] == r["edge_top"]), None)
    kam_top_step = next((s for s in r["kam_steps"] if s["rate"] == r["kam_top"]), None)
    last_kam = r["kam_steps"][-1] if r["kam_steps"] else None
    kam_capped = bool(kam_top_step) and r["kam_top"] == 4000
    lines = []
    add = lines.append
    add("# Benchmark results")
    add("")
    add(f"Generated by `bench/run.sh` on {r['started']}. Every figure below comes from that "
        "one run; rerunning rewrites this file (the profile section at the end is kept in "
        "`bench/profile.md`).")
    add("")
    add("```sh")
    add(r["command"])
    add("```")
    add("")
    add("## Machine and versions")
    add("")
    add("| | |")
    add("|---|---|")
    for key in ("cpus", "cpu", "memory", "kernel", "rustc", "sipp", "redis", "kamailio",
                "python"):
        add(f"| {key} | {m[key]} |")
    # The box may be shared: other work on it lowers every ceiling and raises latency.
    add(f"| load average (1 min), start / end of the run | {m.get('load', 'not recorded')} |")
    add("")
    add("## Set-up")
    add("")
    add(f"- Everything on this one machine: the server under test, redis-server, the RCML "
        f"app server and {r['pairs']} sipp caller/callee pairs (`bench/scenarios/`), all "
        "over UDP on 127.0.0.1.")
    add(f"- Basic call: INVITE, 100/180/200, ACK, a hold of {r['hold_ms']} ms, BYE. Each "
        "step offers a fixed rate for "
        f"{r['step_s']:g} s (split over the pairs); a rate is *sustained* when at least "
        "99.9% of its calls completed and the callers got answers at >= 95% of that rate.")
    add("- The edge: `switchyard-edge --redis-url` (release build, default log level "
        "`info` to a file), its own redis-server, routes written to Redis as the operator's "
        "full sync leaves them. RCML: every call POSTs `voiceUrl` to `bench/app_server.py` "
        "(keep-alive); documents are **not cached** (the edge has no document cache, and a "
        "POST with the call's parameters is not cacheable).")
    add("- Kamailio: `bench/kamailio.cfg`, stateful (tm `t_relay`, `record_route`, "
        "`loose_route`), 2 UDP workers, no database. Same callers, callees and rates.")
    add("- Setup latency: INVITE sent to 200 received, at the caller (sipp `rtd`). sipp "
        "reads its clock once per scheduling loop and on this machine it moves in 4 ms "
        "steps: latencies are multiples of 4 ms, and 0.00 ms means under one step. CPU: "
        "utime+stime from `/proc/<pid>/stat` of the edge (of Kamailio's main process and "
        "all its children) from the start to the end of a step, over the calls completed.")
    add("- Transfer (the seed flow): Alice (`tests/scenarios/uac_transferee.xml`) calls a "
        "number whose voiceUrl dials Bob (`uas_transferor.xml`, with a per-call token "
        "added to Refer-To's user part); Bob answers, after 200 ms sends REFER, takes 202 "
        "and NOTIFYs 100/180/200 and gets BYE. The number's referUrl (POSTed to the app "
        "server, which fills in the `ReferTarget` parameter) returns "
        "`<Dial><Sip>sip:{ReferTarget}@carol</Sip></Dial>`, straight to Carol "
        "(`uas_target.xml`), who answers; Alice is re-INVITEd with Carol's offer, talks "
        "300 ms, hangs up. A transfer completes when Alice, Bob and Carol all count it "
        "successful (the least of the three sipp counts). REFER-to-target-INVITE latency: "
        "tcpdump on `lo` captures only REFERs and the INVITEs sent to Carol's ports; each "
        "packet gets the kernel's timestamp (one clock for both, nanosecond resolution) and "
        "the token pairs each REFER with its target INVITE; the latency therefore includes "
        "the 202, the NOTIFY 100 and the referUrl fetch.")
    add("- Redis round trips: `MONITOR` over 20 calls at 10 calls/s, counting the commands "
        "the edge sent on a call's keys (MONITOR tags those a script ran with `lua`). Every "
        "store operation is one command or script (docs/call-state.md), so round trips = "
        "commands sent. Work Redis does "
        "per call, scripts' commands included: `INFO commandstats` before and after the "
        "half-rate step (it includes what the edge costs with no calls: the timer poll, "
        "about 1,024 commands a second, and the routing-table version check every 5 s).")
    add("")
    add("## Figures")
    add("")
    add("| figure | edge | Kamailio | edge/Kamailio |")
    add("|---|---|---|---|")
    add(f"| highest sustained calls/s (>= 99.9% completed) | {r['edge_top']:g} | "
        f"{r['kam_top']:g}{' (ramp ceiling)' if kam_capped else ''} | "
        f"{ratio(r['edge_top'], r['kam_top'])} |")
    add(f"| setup p50 / p95 / p99 at {r['half']:g} calls/s (half the edge's top) | "
        f"{fmt_ms(eh['p50'])} / {fmt_ms(eh['p95'])} / {fmt_ms(eh['p99'])} | "
        f"{fmt_ms(kh['p50'])} / {fmt_ms(kh['p95'])} / {fmt_ms(kh['p99'])} | |")
    add(f"| CPU per call at {r['half']:g} calls/s | {fmt_int(eh['cpu_us_per_call'])} us | "
        f"{fmt_int(kh['cpu_us_per_call'])} us | "
        f"{ratio(eh['cpu_us_per_call'], kh['cpu_us_per_call'])} |")
    if edge_top_step and kam_top_step:
        add(f"| CPU per call at each one's top rate | "
            f"{fmt_int(edge_top_step['cpu_us_per_call'])} us | "
            f"{fmt_int(kam_top_step['cpu_us_per_call'])} us | "
            f"{ratio(edge_top_step['cpu_us_per_call'], kam_top_step['cpu_us_per_call'])} |")
    inside = eh.get("inside")
    if inside:
        add(f"| inside the edge at {r['half']:g} calls/s: voiceUrl fetch (the Python app "
            f"server) p50 / p99; call-store operation p50 / p99 (the edge's histograms, "
            f"bucket bounds) | {fmt_bound(inside['rcml'][0.5])} / "
            f"{fmt_bound(inside['rcml'][0.99])}; {fmt_bound(inside['store'][0.5])} / "
            f"{fmt_bound(inside['store'][0.99])} | – | |")
    add(f"| Redis CPU per call at {r['half']:g} calls/s (redis-server's utime+stime) | "
        f"{fmt_int(eh.get('redis_cpu_us_per_call'))} us | – | |")
    idle = r.get("idle")
    if idle:
        add(f"| Redis CPU and commands with one edge and no calls (its timer poll and "
            f"routing-table check) | {idle['redis_cpu_pct']:.2f}% of a core, "
            f"{idle['commands_per_s']:,.0f} commands/s | – | |")
        if "edge_cpu_pct" in idle:
            add(f"| edge CPU with no calls (the same poll and check) | "
                f"{idle['edge_cpu_pct']:.2f}% of a core | – | |")
    nb = eh.get("net_bytes_per_call")
    if nb:
        add(f"| Redis network bytes per call at {r['half']:g} calls/s, in / out (INFO stats; "
            f"the timer poll included) | {nb[0]:,.0f} / {nb[1]:,.0f} B | – | |")
    add(f"| Redis commands sent per basic call (MONITOR) | {trace['sent_per_call']:.2f} | – | |")
    add(f"| Redis round trips per basic call | {trips:.2f} | – | |")
    add(f"| Redis commands executed per basic call, scripts' included (commandstats) | "
        f"{cmd_total:.2f} | – | |" if cmd_total else
        "| Redis commands executed per basic call | n/a | – | |")
    add(f"| Redis memory per held call ({held['peak_active']:.0f} up) | "
        f"{fmt_int(held['redis_bytes_per_call'])} B | – | |")
    per10k = (held["redis_bytes_per_call"] or 0) * 10000 / 2**20
    add(f"| Redis memory per 10,000 held calls | {per10k:.1f} MiB | – | |")
    add(f"| edge RSS: no calls / {held['peak_active']:.0f} held (plateau end) / highest while "
        f"setting them up | {held['rss0'] / 1024:.1f} / {held['rss_end'] / 1024:.1f} / "
        f"{held['rss_peak'] / 1024:.1f} MiB | – | |")
    th = r.get("transfer_half")
    add(f"| highest sustained transfers/s (>= 99.9% completed) | {r['transfer_top']:g} | – | |")
    if th:
        add(f"| REFER to target INVITE p50 / p95 / p99 at {th['rate']:g} transfers/s (half "
            f"the top) | {fmt_ms(th['p50'])} / {fmt_ms(th['p95'])} / {fmt_ms(th['p99'])} | "
            "– | |")
        add(f"| CPU per transfer at {th['rate']:g} transfers/s | "
            f"{fmt_int(th['cpu_us_per_call'])} us | – | |")
        add(f"| Redis CPU per transfer at {th['rate']:g} transfers/s | "
            f"{fmt_int(th.get('redis_cpu_us_per_call'))} us | – | |")
        if th.get("net_bytes_per_transfer"):
            add(f"| Redis network bytes per transfer, in / out | "
                f"{th['net_bytes_per_transfer'][0]:,.0f} / "
                f"{th['net_bytes_per_transfer'][1]:,.0f} B | – | |")
        if th.get("commands_per_transfer"):
            add(f"| Redis commands executed per transfer, scripts' included "
                f"(commandstats) | {th['commands_per_transfer']:.1f} | – | |")
    tt = r.get("transfer_trace")
    if tt:
        add(f"| Redis round trips per transfer (MONITOR; the whole seed flow: Alice's "
            f"call, Bob's answer, REFER, NOTIFYs, Carol, the hang-up) | "
            f"{tt['round_trips_per_call']:.2f} | – | |")
    add("")
    if r.get("cluster_steps"):
        add("## One Redis server and a three-master Redis Cluster")
        add("")
        add("The same edge, callers, callees and RCML, with `--redis-url "
            "redis+cluster://...` to three masters (no replicas, `redis-cli --cluster "
            "create`) on this machine instead of one server; the same ramp. Calls spread "
            "over the masters by bucket (docs/call-state.md); MONITOR on every master counts "
            "what the edge sent.")
        add("")
        add("| figure | one server | three-master cluster |")
        add("|---|---|---|")
        add(f"| highest sustained calls/s (>= 99.9% completed) | {r['edge_top']:g} | "
            f"{r['cluster_top']:g} |")
        ct = r["cluster_trace"]
        add(f"| Redis round trips per basic call (MONITOR) | {trips:.2f} | "
            f"{ct['round_trips_per_call']:.2f} |")
        by_rate = {s["rate"]: s for s in r["cluster_steps"]}
        for step in r["edge_steps"]:
            other = by_rate.get(step["rate"])
            if other and step["rate"] in (500, 1000):
                add(f"| edge CPU per call at {step['rate']:g} calls/s | "
                    f"{fmt_int(step['cpu_us_per_call'])} us | "
                    f"{fmt_int(other['cpu_us_per_call'])} us |")
                add(f"| Redis CPU per call at {step['rate']:g} calls/s (all masters) | "
                    f"{fmt_int(step.get('redis_cpu_us_per_call'))} us | "
                    f"{fmt_int(other.get('redis_cpu_us_per_call'))} us |")
                add(f"| setup p50 / p99 at {step['rate']:g} calls/s | "
                    f"{fmt_ms(step['p50'])} / {fmt_ms(step['p99'])} | "
                    f"{fmt_ms(other['p50'])} / {fmt_ms(other['p99'])} |")
                cmd = step.get("commands")
                ocmd = other.get("commands")
                if cmd and ocmd:
                    add(f"| Redis commands executed per call at {step['rate']:g} calls/s "
                        f"(scripts' included) | {cmd[1]:.1f} | {ocmd[1]:.1f} |")
        add("")
        add("On one machine the cluster's three redis-server processes share the two cores "
            "with everything else, so this shows what the cluster costs the edge (client "
            "routing, a connection per master), not the capacity a cluster of separate "
            "machines adds; docs/scaling.md sizes that.")
        add("")
    add("## Aims")
    add("")
    aims = [
        ("at most 6 Redis round trips per basic call",
         f"{trips:.2f}" if trips else "n/a", bool(trips) and trips <= 6),
        ("CPU per call within 3x of Kamailio's",
         f"{ratio(eh['cpu_us_per_call'], kh['cpu_us_per_call'])}x",
         bool(eh["cpu_us_per_call"] and kh["cpu_us_per_call"])
         and eh["cpu_us_per_call"] <= 3 * kh["cpu_us_per_call"]),
        ("at least 1,000 calls/s on this machine with sipp beside it",
         f"{r['edge_top']:g} calls/s", r["edge_top"] >= 1000),
        ("p99 setup under 10 ms at half the top rate", fmt_ms(eh["p99"]),
         eh["p99"] is not None and eh["p99"] < 10),
        ("at most 2 KB of Redis memory per held call",
         f"{fmt_int(held['redis_bytes_per_call'])} B",
         bool(held["redis_bytes_per_call"]) and held["redis_bytes_per_call"] <= 2048),
        ("edge RSS flat as held calls grow",
         f"{held['rss0'] / 1024:.1f} -> {held['rss_end'] / 1024:.1f} MiB "
         f"({held['peak_active']:.0f} held)",
         held["rss_end"] <= held["rss0"] * 1.5 + 20 * 1024),
    ]
    add("| aim | measured | met |")
    add("|---|---|---|")
    for aim, value, met in aims:
        add(f"| {aim} | {value} | {'yes' if met else '**no**'} |")
    add("")
    add("\"RSS flat\" is judged as: at most 1.5x the idle RSS plus 20 MiB with every call held, "
        "at the end of the plateau (after the 32 s the set-up transactions live).")
    add("")
    ramps = [("Edge ramp (one Redis server)", r["edge_steps"]),
             ("Edge ramp (three-master Redis Cluster)", r.get("cluster_steps")),
             ("Kamailio ramp", r["kam_steps"])]
    for title, steps in ramps:
        if not steps:
            continue
        add(f"## {title}")
        add("")
        add("| offered calls/s | completed | failed | answered calls/s | p50 | p95 | p99 | "
            "CPU/call | Redis CPU/call | each caller's CPU | UDP dropped: kernel / edge | "
            "sustained |")
        add("|---|---|---|---|---|---|---|---|---|---|---|---|")
        for s in steps:
            add(f"| {s['rate']:g} | {s['ok']}/{s['attempted']} | {s['failed']} | "
                f"{s['achieved_rate']:.0f} | {fmt_ms(s['p50'])} | {fmt_ms(s['p95'])} | "
                f"{fmt_ms(s['p99'])} | {fmt_int(s['cpu_us_per_call'])} us | "
                f"{fmt_int(s.get('redis_cpu_us_per_call'))}"
                f"{' us' if s.get('redis_cpu_us_per_call') is not None else ''} | "
                f"{s['sipp_cpu_pct']:.0f}% | {s.get('udp_rcvbuf_errors', 'n/a')} / "
                f"{s.get('edge_dropped', '–')} | {'yes' if sustained(s) else 'no'} |")
        add("")
    if last_kam and sustained(last_kam):
        add("Kamailio sustained the highest rate of the ramp: its true ceiling on this "
            "machine is higher, and the sipp callers (each caller's CPU above) are then the "
            "limit, not Kamailio.")
        add("")
    add("The callers run with `-default_behaviors all,-abortunexp`: in earlier runs a few "
        "calls per thousand through Kamailio failed as sipp's `FailedUnexpectedMessage` "
        "during the hold, a 200 the callee retransmitted because an ACK came late or was "
        "lost in a UDP buffer of the loaded box, which sank Kamailio below the 99.9% bar "
        "at 400 calls/s. A call that really goes wrong still never completes and counts "
        "as failed. Each step's sipp logs and CSVs stay in the run's work directory.")
    add("")
    add("UDP dropped: datagrams the kernel dropped during the step because a socket's "
        "receive buffer was full (`/proc/net/snmp` RcvbufErrors, the whole box: sipp's "
        "sockets and the server's), and SIP messages the edge itself dropped "
        "(`switchyard_edge_sip_messages_dropped_total`, e.g. its inbound queue full). A lost "
        "ACK that the peer does not re-send when the 200 is retransmitted costs a call: "
        "the edge ends it at Timer H (32 s); the edge logs it as `no ACK from the caller`.")
    add("")
    add("Where a caller's CPU is near 100%, that sipp process (single-threaded) is the "
        "bottleneck of the step rather than the server under test; callees do as much work "
        "again. On 2 cores the server, Redis, the app server and the sipp processes share "
        "the same CPUs, so every ceiling here is a ceiling of the whole box.")
    add("")
    add("## Redis commands per basic call")
    add("")
    add(f"Sent by the edge (MONITOR, {trace['calls']} calls), per call:")
    add("")
    add("| command | per call |")
    add("|---|---|")
    for name, per in trace["sent"].items():
        add(f"| {name} | {per:.2f} |")
    add("")
    add(f"Executed by Redis at {r['half']:g} calls/s (commandstats, scripts' commands "
        "included), per completed call:")
    add("")
    add("| command | per call |")
    add("|---|---|")
    for name, per in cmds.items():
        add(f"| {name} | {per:.2f} |")
    add("")
    add("## Held calls")
    add("")
    add(f"{held['count']} calls set up at {held['rate']:g} calls/s "
        f"({held['ramp_s']:.0f} s) and each held for {held['hold_ms'] / 1000:.0f} s, so that "
        f"all are up at once for 45 s; {held['ok']} completed, {held['failed']} failed. "
        "Samples (`switchyard_edge_calls_active`, edge VmRSS, Redis `used_memory`) while "
        "they built up, and at the end of the plateau. While calls are being set up, RSS "
        "also carries the INVITE transactions of the last 32 s (64 x T1 in the Accepted "
        "state, RFC 6026), which depend on the set-up rate, not on the calls held.")
    add("")
    add("| time | calls up | edge RSS | Redis used_memory |")
    add("|---|---|---|---|")
    add(f"| before | 0 | {held['rss0'] / 1024:.1f} MiB | {held['mem0'] / 2**20:.1f} MiB |")
    for t, active, rss, mem in held["levels"]:
        add(f"| {t:.0f} s | {active:.0f} | {rss / 1024:.1f} MiB | {mem / 2**20:.1f} MiB |")
    add(f"| {held['end_s']:.0f} s (plateau end) | {held['peak_active']:.0f} | "
        f"{held['rss_end'] / 1024:.1f} MiB | {held['mem_peak'] / 2**20:.1f} MiB |")
    if "rss_after" in held:
        add(f"| {held['after_s']:.0f} s (every call ended 35 s before) | "
            f"{held['active_after']:.0f} | {held['rss_after'] / 1024:.1f} MiB | "
            f"{held['mem_after'] / 2**20:.1f} MiB |")
    add("")
    add("## Transfer ramp")
    add("")
    add("| offered transfers/s | completed | Alice / Bob / Carol | answered/s | "
        "REFER to INVITE p50 | p95 | p99 | max | CPU/transfer | Redis commands/transfer "
        "| UDP dropped: kernel / edge | sustained |")
    add("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for s in r["transfer_steps"] + ([th] if th else []):
        c = s["counts"]
        label = f"{s['rate']:g}" + (" (half the top, longer)" if s is th else "")
        add(f"| {label} | {s['ok']}/{s['attempted']} | {c['alice']} / {c['bob']} / "
            f"{c['carol']} | {s['achieved_rate']:.0f} | {fmt_ms(s['p50'])} | "
            f"{fmt_ms(s['p95'])} | {fmt_ms(s['p99'])} | {fmt_ms(s['max'])} | "
            f"{fmt_int(s['cpu_us_per_call'])} us | {s['commands_per_transfer']:.1f} | "
            f"{s.get('udp_rcvbuf_errors', 'n/a')} / {s.get('edge_dropped', 'n/a')} | "
            f"{'yes' if sustained(s) else 'no'} |")
    add("")
    add("REFERs with no target INVITE in the capture, per step: " + ", ".join(f"{s['rate']:g}/s: {s['unmatched']}" for s in r["transfer_steps"])
        + "; packets tcpdump reported dropped: "
        + ", ".join(f"{s['dropped']}" for s in r["transfer_steps"]) + ".")
    add("")
    profile = os.path.join(BENCH, "profile.md")
    if os.path.exists(profile):
        with open(profile) as f:
            add(f.read().rstrip())
        add("")
    with open(path, "w") as f:
        f.write("\n".join(lines))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--edge", required=True, help="the switchyard-edge binary")
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--results", default=os.path.join(BENCH, "RESULTS.md"))
    parser.add_argument("--pairs", type=int, default=2, help="sipp caller/callee pairs")
    parser.add_argument("--step-seconds", type=float, default=8)
    parser.add_argument("--held", type=int, default=10000)
    parser.add_argument("--held-rate", type=float, default=300)
    parser.add_argument("--command", default="bash bench/run.sh")
    parser.add_argument("--only", default=",".join(SCENARIO_NAMES),
                        help="comma-separated subset of " + ", ".join(SCENARIO_NAMES)
                        + " (a subset leaves RESULTS.md alone; kamailio uses basic's "
                        "half rate, else 50 calls/s)")
    parser.add_argument("--rewrite", action="store_true",
                        help="rebuild RESULTS.md from bench/results.json, measuring nothing")
    args = parser.parse_args()
    args.edge = os.path.abspath(args.edge)
    if args.smoke:
        return smoke(args.edge)
    if args.rewrite:
        with open(os.path.join(BENCH, "results.json")) as f:
            write_results(args.results, json.load(f))
        return 0
    only = tuple(name for name in args.only.split(",") if name)
    unknown = [name for name in only if name not in SCENARIO_NAMES]
    if unknown or not only:
        parser.error(f"--only: unknown scenario {', '.join(unknown) or '(none)'}; "
                     f"choose from {', '.join(SCENARIO_NAMES)}")
    return full(args.edge, args.results, args.pairs, args.step_seconds, args.held,
                args.held_rate, args.command, only)


if __name__ == "__main__":
    sys.exit(main())
