"""Direct JSON text for dataclass contexts: the codec's hot path, compiled once per class.

Every checkpoint encodes the context, so its cost is paid on every step. The general path
(:meth:`DataclassPlan.encode <saga_core._codec.plan.DataclassPlan.encode>`) builds a dict of
JSON-compatible values and hands it to the C encoder; here a function generated for the class
reads the fields and joins their JSON text in one f-string, with the field names quoted once,
at compile time. Its output is exactly the general path's: compact separators, fields in
declaration order, strings quoted by the same C function that the encoder uses.

The generated function only takes the path it is sure of. Fields stored as they are (``str``,
``int``, ``bool``, ``None``) are written directly when their value has exactly that type; any
other field goes through its converter and the C encoder. Whenever anything is not as expected
- another class, a field that is not set, a value of another type, a converter that refuses
the value - it returns ``None`` and the caller takes the general path, which raises the
precise error (with the field's path) or encodes a value this path does not know.

The generated source names no user text: field names reach it only as attribute names, which
``dataclasses`` guarantees are identifiers; their quoted JSON forms are passed in as values.
"""

from __future__ import annotations

import json.encoder
from collections.abc import Callable, Sequence
from typing import Any

NoneType = type(None)

TextEncoder = Callable[[Any], "str | None"]


def _direct(exact: type | None, value: str) -> str | None:
    """The f-string part that writes variable ``value`` when it has exactly type ``exact``,
    or None when that type is not written directly."""
    if exact is str:
        return "{q(" + value + ")}"
    if exact is int:
        return "{r(" + value + ")}"
    if exact is bool:
        return "{'true' if " + value + " else 'false'}"
    if exact is NoneType:
        return "null"
    return None


def compile_text_encoder(
    cls: type,
    fields: Sequence[tuple[str, type | None, Callable[[Any], Any]]],
    dumps: Callable[[Any], str],
) -> TextEncoder:
    """A function ``value -> JSON text | None`` for instances of the dataclass ``cls``.

    ``fields`` are ``(name, exact type or None, encoder)`` in declaration order, as the
    general path uses them; ``dumps`` is the general path's C-encoder call, used for the
    fields written through their converter.
    """
    namespace: dict[str, Any] = {
        "cls": cls,
        "q": json.encoder.encode_basestring,
        "r": int.__repr__,
        "dumps": dumps,
        "AttributeError": AttributeError,
        "Exception": Exception,
    }
    reads: list[str] = []
    checks: list[str] = []
    converted: list[str] = []
    parts: list[str] = []
    for index, (name, exact, enc) in enumerate(fields):
        if not name.isidentifier():  # dataclasses only make identifiers; never trust it blindly
            return _never
        value = f"x{index}"
        key = f"k{index}"
        # '{"name":' for the first field, ',"name":' for the others.
        namespace[key] = ("{" if index == 0 else ",") + json.encoder.encode_basestring(name) + ":"
        reads.append(f"        {value} = v.{name}")
        direct = _direct(exact, value)
        if direct is not None:
            assert exact is not None
            checks.append(f"type({value}) is not {_type_name(exact)}")
            parts.append("{" + key + "}" + direct)
        else:
            namespace[f"e{index}"] = enc
            converted.append(f"        t{index} = dumps(e{index}({value}))")
            parts.append("{" + key + "}{t" + str(index) + "}")
    namespace.update(str=str, int=int, bool=bool, NoneType=NoneType)
    closing = "}" if fields else "{}"
    lines = ["def encode_text(v):", "    if type(v) is not cls:", "        return None"]
    if reads:
        lines += ["    try:", *reads, "    except AttributeError:", "        return None"]
    if checks:
        lines += [f"    if {' or '.join(checks)}:", "        return None"]
    if converted:
        lines += ["    try:", *converted, "    except Exception:", "        return None"]
    lines.append(f"    return f{_fstring_literal(''.join(parts), closing)}")
    # The source is built above from constants and identifiers only (see the module docstring).
    exec("\n".join(lines), namespace)
    function: TextEncoder = namespace["encode_text"]
    return function


def _type_name(tp: type) -> str:
    return "NoneType" if tp is NoneType else tp.__name__


def _fstring_literal(body: str, closing: str) -> str:
    # ``closing`` is the object's final brace (or "{}" for no fields): literal braces are
    # doubled in an f-string.
    return repr(body + closing.replace("{", "{{").replace("}", "}}"))


def _never(value: Any) -> None:
    return None
