"""Run the CLI under typer 0.7 (Debian 12's python3-typer) as well as current typer.

The commands declare their parameters the way typer >= 0.9 reads them: ``Annotated[T,
typer.Option("--name", ...)]`` with the default as the parameter's default. typer 0.7 reads
only the older way: the ``typer.Option(default, "--name", ...)`` object as the default, the type
as the annotation, and ``Optional[T]`` where the code says ``T | None``. ``adapt(app)`` rewrites
the signature of every command and callback of ``app`` (and the apps added to it) into that older
form, and merges the commands of an app added without a name into its parent as newer typer
does; it is called once, and only under typer < 0.9 (``LEGACY``). ``Argument`` objects are made
with an explicit ``...`` default, which both versions accept. typer 0.7 has no ``parser=`` for
options either: ``size_option`` gives the --chunk-size option of either version.
"""

from __future__ import annotations

import copy
import inspect
import types
import typing
from collections.abc import Callable
from typing import Annotated, Any, get_args, get_origin

import typer
import typer.models

LEGACY = tuple(int(p) for p in typer.__version__.split(".")[:2]) < (0, 9)


def _optional(hint: Any) -> Any:
    """``X | None`` as ``typing.Optional[X]`` (typer 0.7 knows only typing.Union)."""
    if isinstance(hint, types.UnionType):
        return typing.Union[get_args(hint)]  # noqa: UP007 (the point is the old spelling)
    return hint


def _adapt_function(fn: Callable[..., Any]) -> None:
    hints = typing.get_type_hints(fn, include_extras=True)
    sig = inspect.signature(fn)
    params = []
    annotations: dict[str, Any] = {}
    for p in sig.parameters.values():
        hint = hints.get(p.name, p.annotation)
        default = p.default
        if get_origin(hint) is Annotated:
            base, *meta = get_args(hint)
            found = [m for m in meta if isinstance(m, typer.models.ParameterInfo)]
            if found:
                # one object per parameter: the aliases share theirs between commands
                info = copy.copy(found[0])
                if (isinstance(info, typer.models.OptionInfo) and isinstance(info.default, str)
                        and info.default.startswith("-")):
                    # typer.Option("--name", "-n") under 0.7 took "--name" for the default
                    info.param_decls = (info.default, *(info.param_decls or ()))
                info.default = ... if default is inspect.Parameter.empty else default
                default = info
            hint = base
        hint = _optional(hint)
        annotations[p.name] = hint
        params.append(p.replace(annotation=hint, default=default))
    fn.__signature__ = sig.replace(  # type: ignore[attr-defined]
        parameters=params, return_annotation=inspect.Signature.empty)
    fn.__annotations__ = annotations


def adapt(app: typer.Typer) -> None:
    """Rewrite every command and callback of ``app`` for typer 0.7 (see the module docstring)."""
    for command in app.registered_commands:
        if command.callback is not None:
            _adapt_function(command.callback)
    if app.registered_callback is not None and app.registered_callback.callback is not None:
        _adapt_function(app.registered_callback.callback)
    for group in list(app.registered_groups):
        sub = group.typer_instance
        if sub is None:
            continue
        adapt(sub)
        if _unset(group.name) and _unset(sub.info.name) and sub.registered_callback is None:
            # typer >= 0.9 puts the commands of an app added without a name into the parent;
            # typer 0.7 would make a group without a name, which nobody can call
            app.registered_commands.extend(sub.registered_commands)
            app.registered_groups.remove(group)


def _unset(value: Any) -> bool:
    return getattr(value, "value", value) is None  # typer's DefaultPlaceholder or the value
