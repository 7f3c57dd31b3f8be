"""Embedded services: everything Groundwork needs on one machine, from pip-installed parts.

`python -m embedded start|stop|status|run` — see embedded/__main__.py. Each service is started
only when its variable does not point elsewhere (config/runtime.py decides), bound to
127.0.0.1, health-checked, logged under DATA_DIR/logs, and reused when already running.
"""
