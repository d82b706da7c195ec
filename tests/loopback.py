"""Real services on loopback for the fault tests and the rehearsal: a two-node Ray cluster
started with `ray start`, and moto's S3 server behind a WSGI middleware that counts every
request (per phase) and fails chosen ones, run as a subprocess of its own.

    python tests/loopback.py s3 --port P --uncounted-port Q   # what start_s3() runs
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import defaultdict
from urllib.parse import parse_qs


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def processes_matching(text: str) -> list[int]:
    """Pids whose command line contains ``text`` (read from /proc: no psutil needed)."""
    found = []
    for path in glob.glob("/proc/[0-9]*/cmdline"):
        try:
            with open(path, "rb") as handle:
                command = handle.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in command:
            found.append(int(path.split("/")[2]))
    return found


def with_descendants(pids: list[int]) -> list[int]:
    """``pids`` and every process below them, parents first. A raylet's dashboard and
    runtime-env agents retitle themselves (``ray::DashboardAgent``), so only their parent
    finds them; left behind when it dies, they run on, taking a fifth of a core each."""
    children = defaultdict(list)
    for path in glob.glob("/proc/[0-9]*/stat"):
        try:
            with open(path) as handle:
                parent = int(handle.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children[parent].append(int(path.split("/")[2]))
    found, todo = [], list(pids)
    while todo:
        pid = todo.pop(0)
        if pid not in found:
            found.append(pid)
            todo.extend(children.get(pid, []))
    return found


def kill_all(pids: list[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


class LoopbackCluster:
    """`ray start --head` plus one worker node (none when ``worker_cpus`` is 0: a one-node
    cluster, as the throughput benchmark's ``ray-job`` runs use), in their own temp dir,
    stopped by killing exactly their processes (``ray stop`` would also stop any other Ray
    on the machine)."""

    def __init__(self, head_cpus: int = 1, worker_cpus: int = 2, env: dict | None = None) -> None:
        self.temp_dir = tempfile.mkdtemp(prefix="fdr-", dir="/tmp")  # short: Ray's socket paths
        self.port, self.dashboard_port, self.worker_port = free_port(), free_port(), free_port()
        self.worker_cpus = worker_cpus
        bin_dir = os.path.dirname(sys.executable)
        # Token authentication is for clusters reachable from a network; this one is loopback only.
        self.env = dict(
            env or os.environ,
            PATH=f"{bin_dir}:{os.environ.get('PATH', '')}",
            RAY_AUTH_MODE="disabled",
            RAY_ADDRESS="",
            # A killed node is marked dead after 5 missed health checks, 1 s apart, rather
            # than Ray's 3 s apart: the fault tests and the rehearsal wait 5 s, not 15 s.
            RAY_health_check_period_ms="1000",
        )
        self.ray = os.path.join(bin_dir, "ray")
        self._ray(
            "start",
            "--head",
            f"--port={self.port}",
            f"--num-cpus={head_cpus}",
            "--include-dashboard=true",
            "--dashboard-host=127.0.0.1",
            f"--dashboard-port={self.dashboard_port}",
            f"--ray-client-server-port={free_port()}",
            *self.node_ports(),
        )
        if worker_cpus:
            self.start_worker()

    @property
    def dashboard(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    def node_ports(self) -> list[str]:
        """Ports of one node's agents: two nodes on one machine must not share the defaults
        (the job agent of the second would fail to bind, and job submission wait forever)."""
        return [
            "--disable-usage-stats",
            f"--temp-dir={self.temp_dir}",
            f"--dashboard-agent-listen-port={free_port()}",
            f"--dashboard-agent-grpc-port={free_port()}",
            f"--metrics-export-port={free_port()}",
            f"--runtime-env-agent-port={free_port()}",
        ]

    def _ray(self, *args: str) -> None:
        done = subprocess.run([self.ray, *args], env=self.env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr[-2000:]

    def start_worker(self) -> None:
        self._ray(
            "start",
            f"--address=127.0.0.1:{self.port}",
            f"--num-cpus={self.worker_cpus}",
            f"--node-manager-port={self.worker_port}",
            *self.node_ports(),
        )

    def kill_worker_node(self) -> int:
        """SIGKILL the worker node's raylet and every process under it: the node dies with
        every task, actor and agent on it. Returns how many raylets were killed."""
        pids = self.raylets(worker_only=True)
        kill_all(with_descendants(pids))  # the whole node: its workers and agents too
        return len(pids)

    def raylets(self, worker_only: bool = False) -> list[int]:
        """Pids of this cluster's raylets (both nodes, or the worker node's only)."""
        text = f"--node_manager_port={self.worker_port}" if worker_only else self.temp_dir
        return [
            p
            for p in processes_matching(text)
            if "raylet" in open(f"/proc/{p}/cmdline", "rb").read().split(b"\0")[0].decode()
        ]

    def submit(self, command: list[str], env_vars: dict, working_dir: str, timeout: float = 1800):
        """``ray job submit --no-wait`` of ``command``, then the job's status polled over the
        Jobs REST API until it ends and its logs read once. The CLI's own log tail reports a
        finished job 5-6 s late (the head tails the log file once a second and closes a
        second after the job ends: 8.5 s for a job of ``python -c pass`` against 2.3 s),
        which the rehearsal would count as its six jobs' time. Retried while the head's
        job agent is still coming up after `ray start`. Returns a CompletedProcess: the
        job's logs as stdout, the CLI's output and the job's status message as stderr, 0
        as returncode when the job succeeded."""
        runtime_env = json.dumps({"env_vars": env_vars})
        submission_id = f"loopback-{os.getpid()}-{time.monotonic_ns()}"
        args = [self.ray, "job", "submit", "--address", self.dashboard, "--working-dir", working_dir]
        args += ["--runtime-env-json", runtime_env, "--submission-id", submission_id, "--no-wait", "--"]
        deadline = time.monotonic() + 60
        while True:
            submitted = subprocess.run(
                args + command, env=self.env, capture_output=True, text=True, timeout=120
            )
            if "No available agent" not in submitted.stderr or time.monotonic() > deadline:
                break
            time.sleep(2)
        if submitted.returncode != 0:
            return submitted
        job = self.wait_for_job(submission_id, timeout)
        logs = self.jobs_api(f"{submission_id}/logs")["logs"]
        said = submitted.stdout + submitted.stderr + f"\njob {job['status']}: {job.get('message') or ''}\n"
        return subprocess.CompletedProcess(
            args + command, 0 if job["status"] == "SUCCEEDED" else 1, logs, said
        )

    def jobs_api(self, path: str) -> dict:
        with urllib.request.urlopen(f"{self.dashboard}/api/jobs/{path}", timeout=30) as reply:
            return json.load(reply)

    def wait_for_job(self, submission_id: str, timeout: float) -> dict:
        """The job's details once it has ended (SUCCEEDED, FAILED or STOPPED)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job = self.jobs_api(submission_id)
            if job["status"] in ("SUCCEEDED", "FAILED", "STOPPED"):
                return job
            time.sleep(0.2)
        raise TimeoutError(f"job {submission_id} not finished in {timeout:.0f} s")

    def stop(self) -> None:
        # The Ray client server names only the head's address (host:port), not the temp dir.
        ours = processes_matching(self.temp_dir) + processes_matching(f":{self.port} ")
        kill_all(with_descendants(ours))
        shutil.rmtree(self.temp_dir, ignore_errors=True)


# -- moto's S3 server behind a counting, failing middleware ---------------------------------

CONTROL = "/_loopback/"
ERROR_BODY = (
    b'<?xml version="1.0" encoding="UTF-8"?>'
    b"<Error><Code>ServiceUnavailable</Code><Message>Please retry.</Message></Error>"
)


def request_kind(method: str, path: str, query: str) -> str:
    """S3's billing class of a request: LIST (a bucket listing), GET, PUT (PUT, POST, COPY),
    HEAD or DELETE."""
    if method == "GET" and (path.strip("/").count("/") == 0 or "list-type" in query or "prefix=" in query):
        return "LIST"
    if method in ("PUT", "POST"):
        return "PUT"
    return method


class CountingFailingS3:
    """Counts requests and bytes per phase and kind; fails (503) every request matching an
    outage's ``method path-prefix`` rules. Controlled over HTTP under CONTROL."""

    def __init__(self, app, counted: bool) -> None:
        self.app, self.counted = app, counted
        self.state = SHARED

    def __call__(self, environ, start_response):
        path, method = environ.get("PATH_INFO", ""), environ["REQUEST_METHOD"]
        if path.startswith(CONTROL):
            return self.control(path[len(CONTROL) :], environ, start_response)
        request = f"{method} {path}"
        state = self.state
        with state["lock"]:
            failing = any(request.startswith(rule) for rule in state["outage"])
            if self.counted:
                kind = request_kind(method, path, environ.get("QUERY_STRING", ""))
                counts = state["phases"][state["phase"]]
                counts[f"requests_{kind}"] += 1
                counts["bytes_in"] += int(environ.get("CONTENT_LENGTH") or 0)
                counts["failed"] += failing
        if failing:
            body = b"" if method == "HEAD" else ERROR_BODY  # S3 answers HEAD without a body
            start_response(
                "503 Service Unavailable",
                [("Content-Type", "application/xml"), ("Content-Length", str(len(body)))],
            )
            return [body]
        response = self.app(environ, start_response)
        return self.count_out(response) if self.counted else response

    def count_out(self, response):
        counts = self.state["phases"][self.state["phase"]]
        try:
            for chunk in response:
                with self.state["lock"]:
                    counts["bytes_out"] += len(chunk)
                yield chunk
        finally:
            getattr(response, "close", lambda: None)()

    def control(self, command: str, environ, start_response):
        state, query = self.state, parse_qs(environ.get("QUERY_STRING", ""))
        with state["lock"]:
            if command == "phase":
                state["phase"] = query["name"][0]
            elif command == "outage":
                state["outage"] = query.get("rule", [])
            body = json.dumps({"phase": state["phase"], "outage": state["outage"], "phases": state["phases"]})
        start_response("200 OK", [("Content-Type", "application/json")])
        return [body.encode()]


SHARED: dict = {
    "lock": threading.Lock(),
    "phase": "setup",
    "outage": [],
    "phases": defaultdict(lambda: defaultdict(int)),
}


def serve_s3(port: int, uncounted_port: int) -> None:
    """moto's S3 app on two ports sharing its buckets: ``port`` counted (what the jobs
    use), ``uncounted_port`` for the script's own uploads and checks."""
    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )
    from werkzeug.serving import make_server

    moto = DomainDispatcherApplication(create_backend_app)
    servers = [
        make_server(
            "127.0.0.1",
            p,
            CountingFailingS3(moto, counted),
            threaded=True,
            request_handler=MotoRequestHandler,
        )
        for p, counted in ((port, True), (uncounted_port, False))
    ]
    threading.Thread(target=servers[1].serve_forever, daemon=True).start()
    servers[0].serve_forever()


class LoopbackS3:
    """The S3 server subprocess and its control calls."""

    def __init__(self) -> None:
        self.port, self.uncounted_port = free_port(), free_port()
        self.process = subprocess.Popen(
            [
                sys.executable,
                __file__,
                "s3",
                "--port",
                str(self.port),
                "--uncounted-port",
                str(self.uncounted_port),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 60
        while True:
            try:
                self.control("phase", name="setup")
                break
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the loopback S3 server did not start") from None
                time.sleep(0.2)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def uncounted_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.uncounted_port}"

    def create_bucket(self, bucket: str) -> None:
        """A new bucket, made through the uncounted port (moto takes any credentials)."""
        import boto3

        boto3.client(
            "s3",
            endpoint_url=self.uncounted_endpoint,
            region_name="us-east-1",
            aws_access_key_id="loopback",
            aws_secret_access_key="loopback",
        ).create_bucket(Bucket=bucket)

    def control(self, command: str, **query) -> dict:
        from urllib.parse import urlencode

        url = f"{self.uncounted_endpoint}{CONTROL}{command}?{urlencode(query, doseq=True)}"
        with urllib.request.urlopen(urllib.request.Request(url, method="POST"), timeout=10) as answer:
            return json.loads(answer.read())

    def phase(self, name: str) -> None:
        """Count the requests from now on under ``name``."""
        self.control("phase", name=name)

    def outage(self, rules: list[str]) -> None:
        """Answer 503 to every request starting with one of ``rules`` ('GET /bucket/key');
        an empty list ends the outage."""
        self.control("outage", rule=rules)

    def counts(self) -> dict[str, dict[str, int]]:
        return self.control("counts")["phases"]

    def stop(self) -> None:
        self.process.kill()
        self.process.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("service", choices=["s3"])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--uncounted-port", type=int, required=True)
    args = parser.parse_args()
    serve_s3(args.port, args.uncounted_port)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
