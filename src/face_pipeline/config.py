"""Parameter blocks read into typed, frozen objects: an unknown or misspelt key is an error, never ignored."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


class ConfigError(ValueError):
    """A parameter block that cannot be what was meant: the message names the key, the block and the file."""


def parameter_files(block: str, conf_dir: str | Path = "conf") -> list[str]:
    """The parameter files under ``conf_dir`` that define ``block``'s top-level key (for messages)."""
    top = block.split(".", 1)[0]
    pattern = re.compile(rf"^{re.escape(top)}\s*:", re.MULTILINE)
    files = sorted(Path(conf_dir).glob("*/parameters*.yml")) + sorted(Path(conf_dir).glob("*/parameters/**/*.yml"))
    found = []
    for path in files:
        try:
            if pattern.search(path.read_text(encoding="utf-8")):
                found.append(str(path))
        except OSError:
            continue
    return found


def check_keys(params: Mapping[str, Any] | None, known: Iterable[str], block: str) -> dict[str, Any]:
    """``params`` as a dict, after checking that every key is in ``known``.

    Raises ``ConfigError`` naming each unknown key, ``block`` (``gender.training``) and the
    files that define it, with the keys that are known.
    """
    params = dict(params or {})
    known = sorted(known)
    unknown = sorted(set(params) - set(known))
    if unknown:
        files = parameter_files(block)
        where = " or ".join(files) if files else "the parameter files under conf/"
        raise ConfigError(
            f"unknown key(s) {', '.join(map(repr, unknown))} in parameters '{block}' ({where}); "
            f"known keys: {', '.join(known)}"
        )
    return params


def read_block(cls: type[T], params: Mapping[str, Any] | None, block: str) -> T:
    """The frozen dataclass ``cls`` made from ``params``, every key checked against its fields."""
    names = [field.name for field in dataclasses.fields(cls)]  # type: ignore[arg-type]
    values = check_keys(params, names, block)
    try:
        return cls(**values)
    except TypeError as error:  # a required key is missing
        raise ConfigError(f"parameters '{block}': {error}") from error


def require_choice(value: Any, choices: Iterable[Any], key: str) -> None:
    """A ``ConfigError`` unless ``value`` is one of ``choices``."""
    choices = list(choices)
    if value not in choices:
        raise ConfigError(f"{key} must be one of {', '.join(map(str, choices))}; got {value!r}")


def require_range(
    value: Any, key: str, *, at_least: float | None = None, above: float | None = None, below: float | None = None
) -> None:
    """A ``ConfigError`` unless ``value`` lies within the bounds given (``at_least`` <= value, ``above`` <
    value, value < ``below``)."""
    number = float(value)
    bounds = []
    if at_least is not None:
        bounds.append((number >= at_least, f"at least {at_least:g}"))
    if above is not None:
        bounds.append((number > above, "positive" if above == 0 else f"above {above:g}"))
    if below is not None:
        bounds.append((number < below, f"below {below:g}"))
    if not all(within for within, _ in bounds):
        raise ConfigError(f"{key} must be {' and '.join(text for _, text in bounds)}; got {value!r}")
