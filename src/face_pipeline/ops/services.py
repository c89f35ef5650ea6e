"""Fail fast, in one line naming the endpoint, when a configured server is not reachable.

Without this check a stopped MLflow server makes every client call retry for minutes, and a
stopped object store ends a run in a long botocore traceback. Only remote endpoints in the
configuration are checked: the default (SQLite, local folders, local processes) has none.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import click
from kedro.config import MissingConfigException
from kedro.framework.hooks import hook_impl

from face_pipeline.ops.tracking import without_credentials

DEFAULT_PORTS = {"http": 80, "https": 443, "tcp": 8786}


class ServiceUnreachable(click.ClickException):
    """Shown by ``kedro run`` as one ``Error: ...`` line."""


def unreachable_reason(url: str, timeout: float = 3.0) -> str | None:
    """Why a TCP connection to ``url``'s host and port fails, or None when it succeeds."""
    parts = urlsplit(url)
    port = parts.port or DEFAULT_PORTS.get(parts.scheme, 80)
    try:
        with socket.create_connection((parts.hostname or "localhost", port), timeout=timeout):
            return None
    except OSError as error:
        return error.strerror or type(error).__name__


def storage_endpoints(credentials: dict[str, Any]) -> Iterator[str]:
    """The ``client_kwargs.endpoint_url`` of every credentials entry that has one."""
    for entry in credentials.values():
        if isinstance(entry, dict):
            endpoint = (entry.get("client_kwargs") or {}).get("endpoint_url")
            if endpoint:
                yield str(endpoint)


def scheduler_addresses(params: dict[str, Any]) -> Iterator[str]:
    for section in params.values():
        if isinstance(section, dict) and section.get("scheduler"):
            yield str(section["scheduler"])


def configured_services(context: Any) -> list[tuple[str, str, str]]:
    """``(what, url, how to fix)`` for every remote service the run will use."""
    services = []
    # kedro-mlflow adds this pattern in its own hook, which runs after this one.
    context.config_loader.config_patterns.setdefault("mlflow", ["mlflow*", "mlflow*/**", "**/mlflow*"])
    with contextlib.suppress(MissingConfigException, KeyError):
        uri = str(context.config_loader["mlflow"]["server"]["mlflow_tracking_uri"])
        if uri.startswith(("http://", "https://")):
            services.append(("MLflow tracking server", uri, "set MLFLOW_TRACKING_URI to a running one"))
    with contextlib.suppress(MissingConfigException):
        for endpoint in storage_endpoints(context.config_loader["credentials"]):
            services.append(("object store", endpoint, "set AWS_ENDPOINT_URL to a running one"))
    for address in dict.fromkeys(scheduler_addresses(context.params)):
        services.append(("Dask scheduler", address, "set DASK_SCHEDULER_ADDRESS to a running one"))
    return services


class ServiceCheckHook:
    """Before anything else (kedro-mlflow included) contacts a server, check they all answer."""

    @hook_impl(tryfirst=True)
    def after_context_created(self, context: Any) -> None:
        problems = [
            f"the {what} at {without_credentials(url)} ({reason}): start it or {fix}"
            for what, url, fix in configured_services(context)
            if (reason := unreachable_reason(url))
        ]
        if problems:
            raise ServiceUnreachable(f"Cannot reach {'; '.join(problems)}. Then run again.")
