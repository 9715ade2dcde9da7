"""Text files that read best as files: jinja2 templates from the repository's templates/ directory.

The templates ship inside the package as `provision.templates` (pyproject maps the top-level
templates/ directory there), and are read through importlib.resources, so an editable checkout
and an installed wheel render the same bytes. Renderers stay pure: a template sees only the
values its renderer passes in.

Environment choices: StrictUndefined (a misspelt variable is an error, not an empty string);
keep_trailing_newline (the files end in a newline, as written); trim_blocks + lstrip_blocks (a
`{% ... %}` line leaves no blank line or indentation behind); no autoescaping (none of this is HTML).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from importlib import resources

import jinja2

TEMPLATES_PACKAGE = "provision.templates"


def _load(name: str) -> tuple[str, str, Callable[[], bool]] | None:
    source = resources.files(TEMPLATES_PACKAGE).joinpath(*name.split("/"))
    if not source.is_file():
        return None  # jinja2 then raises TemplateNotFound naming it
    # A template never changes under a running process, so it is always "up to date".
    return source.read_text(encoding="utf-8"), str(source), lambda: True


def toml_value(value: str | bool) -> str:
    """`{{ x | toml }}`: a TOML boolean, or a basic string (JSON's escaping is a subset TOML accepts)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    raise TypeError(f"no TOML spelling for {type(value).__name__} {value!r}")


@functools.cache
def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FunctionLoader(_load),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,
    )
    env.filters["toml"] = toml_value
    return env


def render_text(name: str, **context: object) -> str:
    """templates/<name> rendered with `context`, as text (for callers that embed it, e.g. a ConfigMap)."""
    return environment().get_template(name).render(**context)


def render_template(name: str, **context: object) -> bytes:
    """templates/<name> rendered with `context`, UTF-8 encoded: a file's exact bytes."""
    return render_text(name, **context).encode()
