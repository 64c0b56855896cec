"""One set of argument checks for every operator and the sensor, at parse time and at run time.

Each check raises `InvalidArgumentError` (a ``ValueError``) naming the parameter, what it got and
what it takes, so a bad argument fails the DAG file when it is parsed, before anything is paid.

Template fields cannot be checked before Airflow renders them: at parse time (``rendered=False``)
a value that is still a Jinja template (a string holding ``{{``) or an XCom reference is passed
over, and the operator runs the same checks on the rendered values at the start of ``execute``
(``rendered=True``), still before any paid call.
"""

from __future__ import annotations

import datetime
import json
import math
import os
from collections.abc import Collection, Mapping
from typing import Any

from airflow_provider_tokentier.core.chain_plan import parse_iso
from airflow_provider_tokentier.core.errors import InvalidArgumentError
from airflow_provider_tokentier.core.requests import OPENAI_ENDPOINTS, PROVIDERS, unsendable_value
from airflow_provider_tokentier.runtime.settings import resolve_price_table


def is_unrendered(value: Any) -> bool:
    """True for a value Airflow has yet to resolve: a Jinja template string or an XCom reference."""
    if isinstance(value, str):
        return "{{" in value or "{%" in value
    # XComArg / MappedArgument and friends resolve at run time; they all have `resolve`.
    return hasattr(value, "resolve") and not isinstance(value, (Mapping, list, tuple))


class ArgumentChecks:
    """The checks, bound to when they run: ``rendered=False`` at parse time, True in ``execute``."""

    def __init__(self, *, rendered: bool) -> None:
        """``rendered``: template fields hold their final values (run time)."""
        self.rendered = rendered

    def _skip(self, value: Any) -> bool:
        return not self.rendered and is_unrendered(value)

    # -- numbers ----------------------------------------------------------------------------------
    def number(
        self,
        name: str,
        value: Any,
        *,
        minimum: float = 0.0,
        inclusive: bool = False,
        integer: bool = False,
        optional: bool = False,
    ) -> None:
        """A real number (an int when ``integer``) above ``minimum`` (or equal when ``inclusive``)."""
        if value is None and optional:
            return
        kind = "an integer" if integer else "a number"
        bound = f">= {minimum:g}" if inclusive else f"> {minimum:g}"
        if isinstance(value, str):
            raise InvalidArgumentError(
                name, f"must be {kind} {bound}, got the string {value!r}; pass it without quotes"
            )
        ok_type = isinstance(value, int) if integer else isinstance(value, (int, float))
        if isinstance(value, bool) or not ok_type:
            raise InvalidArgumentError(name, f"must be {kind} {bound}, got {type(value).__name__} {value!r}")
        if not math.isfinite(value) or (value < minimum if inclusive else value <= minimum):
            raise InvalidArgumentError(name, f"must be {kind} {bound}, got {value!r}")

    def seconds(self, name: str, value: Any, *, optional: bool = False, allow_zero: bool = False) -> None:
        """Seconds as a number or a ``timedelta``."""
        if isinstance(value, datetime.timedelta):
            value = value.total_seconds()
        self.number(name, value, optional=optional, inclusive=allow_zero)

    def fraction(self, name: str, value: Any, *, low_open: bool = False) -> None:
        """A number in [0, 1] (``(0, 1]`` when ``low_open``)."""
        if low_open:
            self.number(name, value)
        else:
            self.number(name, value, inclusive=True)
        if value > 1:
            raise InvalidArgumentError(name, f"must be at most 1, got {value!r}")

    # -- choices and names ------------------------------------------------------------------------
    def one_of(self, name: str, value: Any, choices: Collection[Any]) -> None:
        """``value`` is one of ``choices``."""
        if self._skip(value):
            return
        if value not in choices:
            raise InvalidArgumentError(name, f"must be one of {tuple(choices)}, got {value!r}")

    def provider(self, value: Any) -> None:
        """``"anthropic"`` or ``"openai"``."""
        self.one_of("provider", value, PROVIDERS)

    def endpoint(self, provider: str, value: Any) -> None:
        """An OpenAI batch endpoint, or None (ignored for Anthropic)."""
        if value is None or provider != "openai":
            return
        self.one_of("endpoint", value, OPENAI_ENDPOINTS)

    def text(self, name: str, value: Any, *, optional: bool = True) -> None:
        """A non-empty string (a conn id, a model name, a URI)."""
        if (value is None and optional) or self._skip(value):
            return
        if not isinstance(value, str) or not value.strip():
            raise InvalidArgumentError(name, f"must be a non-empty string, got {value!r}")

    def flag(self, name: str, value: Any) -> None:
        """A bool (``"False"`` is a string, and true)."""
        if not isinstance(value, bool):
            raise InvalidArgumentError(name, f"must be True or False, got {type(value).__name__} {value!r}")

    # -- workload sources -------------------------------------------------------------------------
    def request_source(self, requests: Any, requests_uri: Any) -> None:
        """Exactly one of ``requests`` (rows or an XCom) and ``requests_uri`` (a JSONL file)."""
        if (requests is None) == (requests_uri is None):
            raise InvalidArgumentError(
                "requests",
                "give exactly one of `requests` (rows or an XCom) and `requests_uri` (a JSONL file)",
            )
        self.text("requests_uri", requests_uri)
        if not self.rendered and isinstance(requests, (list, tuple)):
            self._sendable_rows(requests)
        if self.rendered and requests is not None and isinstance(requests, (str, bytes)):
            raise InvalidArgumentError(
                "requests",
                "must be a list of request rows, got a string; for a JSONL file of rows, pass its URI "
                "as `requests_uri`; for a templated XCom, pass the task's `.output` or set the DAG's "
                "render_template_as_native_obj=True",
            )

    @staticmethod
    def _sendable_rows(rows: list[Any] | tuple[Any, ...]) -> None:
        """Refuse literal rows with NaN/Infinity or lone surrogates at parse time.

        Airflow cannot even hand them to the task: its rendered-fields upload is JSON.
        """
        for index, row in enumerate(rows):
            problem = unsendable_value(row)
            if problem is not None:
                custom_id = row.get("custom_id") if isinstance(row, Mapping) else None
                raise InvalidArgumentError(
                    "requests", f"request #{index} (custom_id={custom_id!r}): {problem}"
                )

    def workload(self, provider: Any, requests: Any, requests_uri: Any, endpoint: Any) -> None:
        """Provider, request source and OpenAI endpoint of a workload."""
        self.provider(provider)
        self.request_source(requests, requests_uri)
        self.endpoint(provider, endpoint)

    def batch_ids(self, value: Any) -> None:
        """A list of batch id strings.

        A lone string is refused: iterating it would poll each character as a batch id.
        """
        if value is None or self._skip(value):
            return
        if isinstance(value, str):
            raise InvalidArgumentError(
                "batch_ids",
                f"must be a list of batch ids, got the string {value!r}; for one batch pass "
                f"[{value!r}]" + (" (or render the template as a native list)" if self.rendered else ""),
            )
        if not isinstance(value, (list, tuple)) or not value:
            raise InvalidArgumentError("batch_ids", f"must be a non-empty list of batch ids, got {value!r}")
        bad = [item for item in value if not isinstance(item, str) or not item]
        if bad:
            raise InvalidArgumentError("batch_ids", f"must hold batch id strings, got {bad[:3]!r}")

    # -- times and prices -------------------------------------------------------------------------
    def deadline(self, value: Any) -> None:
        """A datetime, an ISO 8601 string, a timedelta, or None."""
        if value is None or self._skip(value):
            return
        if isinstance(value, (datetime.datetime, datetime.timedelta)):
            return
        if isinstance(value, str):
            try:
                parse_iso(value)
            except ValueError:
                raise InvalidArgumentError(
                    "deadline", f"must be an ISO 8601 datetime, got {value!r}"
                ) from None
            return
        hint = (
            f"; for {value} seconds from now pass datetime.timedelta(seconds={value})"
            if isinstance(value, (int, float)) and not isinstance(value, bool)
            else ""
        )
        raise InvalidArgumentError(
            "deadline",
            f"must be a datetime, an ISO 8601 string or a timedelta, got {type(value).__name__} "
            f"{value!r}{hint}",
        )

    def prices(self, value: Any) -> None:
        """Price overrides: a mapping, inline JSON, or a path to a JSON file.

        A mapping and inline JSON are checked in full. A path is checked when it exists here
        (at parse time it may exist only on the workers; then it is checked at the start of
        the run).
        """
        if value is None or self._skip(value):
            return
        if isinstance(value, str) and not value.lstrip().startswith(("{", "[")):
            if not self.rendered and not os.path.exists(value):
                return
        elif not isinstance(value, (str, Mapping, os.PathLike)):
            raise InvalidArgumentError(
                "prices", f"must be a dict, inline JSON or a JSON file path, got {type(value).__name__}"
            )
        try:
            resolve_price_table(value, use_config=False)
        except (ValueError, json.JSONDecodeError, TypeError) as exc:
            raise InvalidArgumentError("prices", str(exc)) from None


__all__ = ["ArgumentChecks", "is_unrendered"]
