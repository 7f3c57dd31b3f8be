"""python -m embedded start|stop|status|run

start   start the embedded services this configuration needs, detached; reuse running ones
stop    stop the embedded services of this DATA_DIR
status  one line per service
run     start everything (services, migrations, demo data, web, Celery worker and beat) in the
        foreground; Ctrl-C stops every child and every service this run started
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

from django.core.exceptions import ImproperlyConfigured

from config.runtime import BASE_DIR, Runtime, runtime
from embedded.services import (
    Service,
    StartupError,
    check_external,
    embedded_services,
    http_json,
    last_log_line,
    port_in_use,
    stop_process_group,
    wait_until,
)


def say(message: str) -> None:
    print(f"groundwork: {message}", flush=True)


def start_services(rt: Runtime) -> list[Service]:
    """Start what is missing and wait until all are healthy; returns the ones we started."""
    check_external(rt)
    services = embedded_services(rt)
    started: list[Service] = []
    try:
        for service in services:
            if service.spawn():
                started.append(service)
                say(f"{service.name}: starting")
            else:
                say(f"{service.name}: already running, reused")
        for service in services:
            service.wait_ready()
            say(f"{service.name}: ready")
    except BaseException:
        stop_services(started)
        raise
    return started


def stop_services(services: list[Service]) -> None:
    for service in reversed(services):
        service.stop()
        say(f"{service.name}: stopped")


def manage(*args: str) -> None:
    command = [sys.executable, str(BASE_DIR / "manage.py"), *args]
    result = subprocess.run(command, cwd=BASE_DIR, check=False)  # noqa: S603
    if result.returncode != 0:
        raise StartupError(f"'manage.py {' '.join(args)}' failed (exit {result.returncode}); see above.")


@dataclass
class Child:
    name: str
    command: list[str]
    log: Path
    process: subprocess.Popen[bytes] | None = field(default=None)

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(  # noqa: S603
                self.command, cwd=BASE_DIR, stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip

    def exited(self) -> int | None:
        return None if self.process is None else self.process.poll()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            stop_process_group(self.process.pid, grace=15)


def app_children(rt: Runtime) -> list[Child]:
    bin_dir = Path(sys.executable).parent
    host = os.environ.get("WEB_HOST", "127.0.0.1")
    logs = rt.log_dir
    return [
        Child(
            "web",
            [
                str(bin_dir / "gunicorn"), "config.wsgi", "--bind", f"{host}:{rt.web_port}",
                "--workers", os.environ.get("WEB_WORKERS", "2"), "--worker-class", "gthread",
                "--threads", os.environ.get("WEB_THREADS", "8"), "--timeout", "300",
                "--access-logfile", "-",
            ],
            logs / "web.log",
        ),
        Child(
            "worker",
            [
                str(bin_dir / "celery"), "-A", "config", "worker", "--loglevel", "INFO",
                "--concurrency", os.environ.get("WORKER_CONCURRENCY", "2"), "--hostname", "worker@%h",
            ],
            logs / "worker.log",
        ),
        Child(
            "beat",
            [
                str(bin_dir / "celery"), "-A", "config", "beat", "--loglevel", "INFO",
                "--schedule", str(rt.run_dir / "celerybeat-schedule"),
            ],
            logs / "beat.log",
        ),
    ]  # fmt: skip


class Stop(Exception):
    pass


def _raise_stop(signum: int, frame: FrameType | None) -> None:
    raise Stop


def run(rt: Runtime) -> int:
    """Bring everything up, print the URL and logins, and keep it running until Ctrl-C."""
    # SIGINT too: a shell that starts us in the background leaves SIGINT ignored, not raising.
    signal.signal(signal.SIGTERM, _raise_stop)
    signal.signal(signal.SIGINT, _raise_stop)
    if port_in_use(rt.web_port):
        raise StartupError(
            f"web: port {rt.web_port} on 127.0.0.1 is in use; stop that program or set WEB_PORT."
        )
    began = time.monotonic()
    started: list[Service] = []
    children: list[Child] = []
    try:
        started = start_services(rt)
        manage("migrate", "--noinput", "--verbosity", "0")
        manage("collectstatic", "--noinput", "--verbosity", "0")
        manage("check_runtime")
        manage("seed_demo")
        children = app_children(rt)
        for child in children:
            child.start()
        url = f"http://127.0.0.1:{rt.web_port}/"

        def web_up() -> bool:
            # /healthz checks every component; while the worker indexes the demo documents the
            # embeddings server is busy and the check can take many seconds on a loaded machine.
            # The web process is up once it answers at all (503 while a component warms up).
            try:
                http_json(f"{url}healthz", timeout=30)
            except OSError as exc:
                return getattr(exc, "code", None) is not None
            except ValueError:
                return False
            return True

        if not wait_until(web_up, timeout=180, interval=0.5):
            raise StartupError(f"web did not answer on {url}; see {rt.log_dir / 'web.log'}")
        say(f"up in {time.monotonic() - began:.1f} s")
        say(f"open {url}  (logs in {rt.log_dir})")
        logins = rt.data_dir / "demo-logins.txt"
        if logins.exists():
            for line in logins.read_text().splitlines():
                say(line)
        say("press Ctrl-C to stop everything")
        while True:
            for child in children:
                code = child.exited()
                if code is not None:
                    raise StartupError(
                        f"{child.name} exited with status {code}: {last_log_line(child.log)} "
                        f"(log: {child.log})"
                    )
            time.sleep(1)
    except (KeyboardInterrupt, Stop):
        say("stopping")
        return 0
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the clean-up short
        for child in reversed(children):
            child.stop()
        stop_services(started)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m embedded", description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["start", "stop", "status", "run"])
    action = parser.parse_args(argv).action
    try:
        rt = runtime()
        if action == "start":
            start_services(rt)
        elif action == "stop":
            stop_services(embedded_services(rt))
        elif action == "status":
            for service in embedded_services(rt):
                say(f"{service.name}: {'healthy' if service.healthy() else 'not running'}")
        else:
            return run(rt)
    except (StartupError, ImproperlyConfigured) as exc:
        say(f"error: {exc}")
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
