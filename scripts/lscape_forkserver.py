"""Run many `lscape` commands from shell scripts without paying Python's and torch's start-up each time.

`serve SOCKET` imports the CLI and its heavy dependencies once, then for every client forks a child that
runs one command with the client's argv, working directory, environment and standard streams (passed
over the Unix socket), and answers with its exit code. `client SOCKET ARGS...` is what an `lscape` shim
on PATH runs: it imports nothing heavy, so each command costs its own work plus a fork. The test of the
study scripts uses it (tests/test_studies.py); results are those of the real console script, which
`lscape` commands in the scripts become again without the shim.

Usage:
    python scripts/lscape_forkserver.py serve /tmp/lscape.sock &
    python scripts/lscape_forkserver.py client /tmp/lscape.sock probe run/model.safetensors
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import pkgutil
import socket
import sys
import traceback

WARM_MODULES = (
    "torch",
    "numpy",
    "matplotlib",
    "safetensors.torch",
    "sklearn.datasets",  # digits: seconds to import
    "scipy.optimize",
    "matplotlib.figure",
    "matplotlib.backends.backend_agg",
    "rich.console",
    "rich.table",
    "rich.progress",
    "pydantic",
    "sympy",
    "torch.func",
    "torch.fx.experimental.symbolic_shapes",
    "lscape_cli.cli",
    "lscape_cli.cli.train",
    "lscape_cli.cli.probe",
    "lscape_cli.cli.slice",
    "lscape_cli.cli.connect",
    "lscape_cli.cli.pareto",
    "lscape_cli.cli.report",
    "lscape_cli.core.training.engine",
    "lscape_cli.core.probe.engine",
    "lscape_cli.core.landscape.slice_run",
    "lscape_cli.core.connectivity.paths",
    "lscape_cli.core.pareto.study",
    "lscape_cli.report.build",
    "lscape_cli.plotting.slices",
    "lscape_cli.plotting.report",
)


def _warm() -> None:
    """Import what every command needs; one thread, as the CLI runs under OMP_NUM_THREADS=1 in tests."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("MPLBACKEND", "Agg")
    import lscape_cli

    names = [*WARM_MODULES, *(m.name for m in pkgutil.walk_packages(lscape_cli.__path__, "lscape_cli."))]
    for name in names:
        with contextlib.suppress(ImportError):  # an optional dependency that is not installed
            importlib.import_module(name)
    import torch

    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


def _run_child(request: dict[str, object], fds: list[int]) -> None:
    """In the fork: take the client's streams, directory and environment, run the command, exit."""
    code = 1
    try:
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
        os.chdir(str(request["cwd"]))
        os.environ.clear()
        os.environ.update({str(k): str(v) for k, v in dict(request["env"]).items()})  # type: ignore[call-overload]
        sys.argv = ["lscape", *[str(a) for a in request["argv"]]]  # type: ignore[attr-defined]
        from lscape_cli.cli import main

        try:
            main()
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:  # noqa: BLE001 - the child must always exit, never return into the server loop
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def serve(path: str) -> None:
    """Accept clients one at a time until one sends ``{"stop": true}``."""
    _warm()
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    staging = f"{path}.{os.getpid()}"
    server.bind(staging)
    server.listen()
    os.replace(staging, path)  # the path appears only once the server accepts (a stale one is replaced)
    while True:
        conn, _ = server.accept()
        with conn:
            first, fds, _, _ = socket.recv_fds(conn, 1 << 16, 3)
            chunks = [first]
            while chunk := conn.recv(1 << 16):
                chunks.append(chunk)
            try:
                request = json.loads(b"".join(chunks))
            except ValueError:  # a client that connected and sent nothing usable
                for fd in fds:
                    os.close(fd)
                continue
            if request.get("stop"):
                for fd in fds:
                    os.close(fd)
                conn.sendall(b"0")
                break
            pid = os.fork()
            if pid == 0:
                _run_child(request, fds)
            for fd in fds:
                os.close(fd)
            _, status = os.waitpid(pid, 0)
            conn.sendall(str(os.waitstatus_to_exitcode(status)).encode())
    server.close()
    os.unlink(path)


def client(path: str, argv: list[str], stop: bool = False) -> int:
    """Send argv, cwd, environment and fds 0-2 to the server; return the command's exit code."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.connect(path)
        body = {"stop": True} if stop else {"argv": argv, "cwd": os.getcwd(), "env": dict(os.environ)}
        socket.send_fds(conn, [json.dumps(body).encode()], [0, 1, 2])
        conn.shutdown(socket.SHUT_WR)
        answer = b"".join(iter(lambda: conn.recv(64), b""))
    code = int(answer or b"1")
    return code if 0 <= code < 256 else 1  # killed by a signal: a failure


if __name__ == "__main__":
    if len(sys.argv) < 3 or sys.argv[1] not in ("serve", "client", "stop"):
        print("Usage: lscape_forkserver.py serve|client|stop SOCKET [ARGS...]", file=sys.stderr)
        sys.exit(2)
    if sys.argv[1] == "serve":
        serve(sys.argv[2])
    else:
        sys.exit(client(sys.argv[2], sys.argv[3:], stop=sys.argv[1] == "stop"))
