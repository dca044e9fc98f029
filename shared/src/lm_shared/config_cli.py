"""A command's flags from its config dataclasses, with ``--config FILE.yaml`` and a saved config.

Built on jsonargparse (what litgpt and LightningCLI use): it merges defaults, ``--config`` files
and typed flags into one nested namespace, and writes the YAML a run saves. This module adds what
the workspace's commands need on top:

- **One flag per field.** :func:`add_dataclass_flags` turns every field of a config dataclass into
  ``--field-name`` whose default is the field's default and whose ``--help`` is the field's
  comment (``x: int = 3  # what x is``) or attribute docstring. Defaults are written once, in the
  dataclass; the flag's value lands at the field's name (or ``section.field``), which is also its
  key in a config file and in the saved config.
- **Old spellings stay valid.** :class:`Flag` gives a field a name other than its own, aliases
  (``--lr`` for ``learning_rate``), choices or a parser for a compact spelling (``90/10``).
  A ``bool`` field is a switch: ``--name`` sets it when it defaults to False, ``--no-name``
  clears it when it defaults to True. A ``list[X]`` field is a repeatable flag (``--stop a
  --stop b``).
- **argparse's behaviour and messages.** ``int``, ``float``, ``str`` and ``Path`` fields are
  converted as argparse does (``invalid int value: 'x'``; a float flag takes ``nan``, so the
  dataclass's own check names the flag); every parse error is one line and exit status 2.
- **Config files.** ``--config FILE.yaml`` (repeatable, later files and typed flags win) loads
  a config with the same keys; :func:`dump_config` gives the YAML of the settings a run used,
  which ``--config`` loads back; :func:`parse` also says which settings were typed or came from a
  file (a resumed run takes the others from its saved config).

Typical use::

    parser = config_parser("prog train", "Train a model.")
    add_dataclass_flags(parser, DataConfig, flags={"seq_len": Flag(aliases=("--context",))})
    cfg, given = parse(parser, argv)
    data = instantiate(parser, cfg, DataConfig)
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import functools
import inspect
import io
import os
import re
import sys
import textwrap
import tokenize
import types
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn

from jsonargparse import ActionConfigFile, ArgumentParser, DefaultHelpFormatter, Namespace

from lm_shared.runs import run_guarded

CONFIG_FLAG = "--config"
_HELP_ONLY_COMMENTS = re.compile(r"^(noqa|type:|fmt:|pragma)\b")


@dataclasses.dataclass(frozen=True)
class Flag:
    """How one dataclass field appears on the command line, where it departs from the rule.

    The rule: field ``seq_len`` is ``--seq-len``, typed by the field's annotation, with the
    field's default and the field's comment as help.

    Args:
        name: the option string to use instead of the field's own (e.g. ``"--no-punctuation"``
            for ``keep_punctuation``).
        aliases: further option strings that set the same field, such as names earlier
            releases documented (``"--lr"`` for ``learning_rate``).
        help: help text instead of the field's comment.
        choices: the accepted values, listed in ``--help``.
        parse: converts the typed string (``"90/10"``); values a config file gives as YAML
            lists or numbers are passed on (a list as a tuple for a tuple field), for the
            dataclass to check.
        metavar: the value's name in ``--help`` (a tuple: one name per value of an ``nargs`` flag).
        positional: the field is a positional argument (``prog evaluate RUN_DIR``), not a flag;
            optional when the field has a default; a ``list[X]`` field takes all the remaining
            arguments (none or more; argparse then sets it, so a config file cannot). Its key is the field's name, as for a flag.
            With ``aliases`` it is both: ``prog fill-mask RUN TEXT`` or ``prog fill-mask --run
            RUN TEXT`` (then the field needs a default; given both ways, the later one wins).
        nargs: the flag takes this many values (``--weights 1 4 1``), or ``"+"`` one or more
            (``--seeds 0 1 2``), for a tuple field of one scalar type (``tuple[int, int, int]``,
            ``tuple[float, ...]``); the parsed list reaches the dataclass as a tuple
            (:func:`instantiate`).
        const: the flag may also be given without a value, which then is ``const``
            (``--resume`` alone means ``--resume last``; argparse's ``nargs="?"``).
    """

    name: str | None = None
    aliases: tuple[str, ...] = ()
    help: str | None = None
    choices: Sequence[Any] | None = None
    parse: Callable[[str], Any] | None = None
    metavar: str | tuple[str, ...] | None = None
    positional: bool = False
    nargs: int | typing.Literal["+"] | None = None
    const: Any = None


@dataclasses.dataclass(frozen=True)
class ConfigField:
    """One flag made from a dataclass field (what :func:`config_fields` lists).

    Args:
        dest: the key of its value in the parsed namespace and config files (``"data.seq_len"``).
        cls: the dataclass.
        name: the field's name.
        option_strings: the flag's spellings, the first one the field's own (none for a
            positional argument).
    """

    dest: str
    cls: type
    name: str
    option_strings: tuple[str, ...]

    @property
    def default(self) -> Any:
        """The field's default (``dataclasses.MISSING`` for a required field)."""
        field = next(f for f in dataclasses.fields(self.cls) if f.name == self.name)
        if field.default_factory is not dataclasses.MISSING:
            return field.default_factory()
        return field.default


class ConfigHelpFormatter(DefaultHelpFormatter):
    """Help that ends in ``(default: X)``, not jsonargparse's ``(type: T, default: X)``.

    An option whose help already speaks of its default, a required one and a ``--no-x`` switch
    show none.
    """

    def _get_help_string(self, action: argparse.Action) -> str:
        help_text = action.help or ""
        if (
            isinstance(action, (ActionConfigFile, argparse._HelpAction))
            or not action.option_strings
            or action.required
            or action.default is argparse.SUPPRESS
            or (isinstance(action, _Switch) and action.const is False)
            or "default" in help_text.lower()
        ):
            return super()._get_help_string(action) if isinstance(action, argparse._HelpAction) else help_text
        return f"{help_text} (default: %(default)s)"


class ConfigParser(ArgumentParser):
    """A jsonargparse parser whose errors are one line (``error: ...``, exit status 2).

    Args:
        *args: passed to :class:`jsonargparse.ArgumentParser`.
        **kwargs: passed to :class:`jsonargparse.ArgumentParser`.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", ConfigHelpFormatter)
        super().__init__(*args, **kwargs)
        self.config_fields: dict[str, ConfigField] = {}

    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        """Print the message as one line naming the flag (not the namespace key), then exit 2.

        Args:
            message: jsonargparse's or argparse's message.
            ex: the exception behind it.

        Raises:
            argparse.ArgumentError: when the parser was made with ``exit_on_error=False``.
        """
        message = self._one_line(message)
        if not self.exit_on_error:
            super().error(message, ex)
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")

    def dump(self, cfg: Namespace, *args: Any, **kwargs: Any) -> str:
        """Serialise ``cfg`` as jsonargparse does, with paths as strings and tuples as lists.

        YAML cannot write a ``Path``; ``--print_config`` and :func:`dump_config` both come here.

        Args:
            cfg: the namespace to write.
            *args: passed to :meth:`jsonargparse.ArgumentParser.dump`.
            **kwargs: passed to :meth:`jsonargparse.ArgumentParser.dump`.

        Returns:
            The serialised settings.
        """
        values = cfg.clone()
        for key in list(values.keys()):
            values[key] = _plain(values[key])
        return super().dump(values, *args, **kwargs)

    def _one_line(self, message: str) -> str:
        flags = {
            dest: field.option_strings[0] if field.option_strings else dest.rsplit(".", 1)[-1]
            for dest, field in self.config_fields.items()
        }
        for action in self._actions:
            if action.option_strings and action.dest not in flags:
                flags[action.dest] = action.option_strings[-1]

        def flag(match: re.Match[str]) -> str:
            return f"argument {flags.get(match.group(1), match.group(1))}:"

        message = re.sub(r'Parser key "([^"]+)":', flag, message)
        required = "the following arguments are required: "
        if message.startswith(required):
            names = [flags.get(name.strip(), name.strip()) for name in message[len(required) :].split(",")]
            message = required + ", ".join(names)
        return " ".join(line.strip() for line in message.strip().splitlines() if line.strip())


def config_parser(
    prog: str, description: str | None = None, *, config_help: str | None = None
) -> ConfigParser:
    """Make a command's parser, with ``--config FILE.yaml``.

    Args:
        prog: the command as the user types it (``"lstm-textgen train"``).
        description: the first paragraph of ``--help``.
        config_help: help text of ``--config`` (a default one says what it does).

    Returns:
        A :class:`ConfigParser`; add the dataclasses with :func:`add_dataclass_flags`.
    """
    parser = ConfigParser(prog=prog, description=description)
    parser.add_argument(
        CONFIG_FLAG,
        action=ActionConfigFile,
        help=config_help
        or "YAML (or JSON) file of settings keyed like the config a run saves (a run's own "
        "among them); repeatable; flags typed after it win (default: none)",
    )
    return parser


def field_comments(cls: type) -> dict[str, str]:
    """Read each dataclass field's description from the class source.

    A field's description is its trailing comment (``x: int = 3  # what x is``; a comment on a
    continuation line of the same statement counts too), the comment lines right above it, or
    the string literal right below it (an attribute docstring). Fields a base class declares are
    read from that class.

    Args:
        cls: the dataclass.

    Returns:
        ``{field name: description}`` for the fields that have one; empty when the source is
        not available (a class made in an interactive session).
    """
    found: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if klass is object:
            continue
        try:
            source = textwrap.dedent(inspect.getsource(klass))
        except (OSError, TypeError):
            continue
        found.update(_class_comments(source))
    names = {f.name for f in dataclasses.fields(cls)} if dataclasses.is_dataclass(cls) else set(found)
    return {name: text for name, text in found.items() if name in names}


def _class_comments(source: str) -> dict[str, str]:
    comments: dict[int, str] = {}
    comment_only: set[int] = set()
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            text = token.string.lstrip("#").strip()
            if text and not _HELP_ONLY_COMMENTS.match(text):
                comments[token.start[0]] = text
            if not token.line[: token.start[1]].strip():
                comment_only.add(token.start[0])
    classdef = ast.parse(source).body[0]
    if not isinstance(classdef, ast.ClassDef):
        return {}
    found: dict[str, str] = {}
    previous_end = classdef.lineno
    for index, node in enumerate(classdef.body):
        end = node.end_lineno or node.lineno
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            above: list[str] = []
            line = node.lineno - 1
            while line > previous_end and line in comment_only:
                above.insert(0, comments.get(line, ""))
                line -= 1
            parts = [text for text in above if text]
            parts += [comments[n] for n in range(node.lineno, end + 1) if n in comments]
            following = classdef.body[index + 1] if index + 1 < len(classdef.body) else None
            if (
                isinstance(following, ast.Expr)
                and isinstance(following.value, ast.Constant)
                and isinstance(following.value.value, str)
            ):
                parts.append(" ".join(inspect.cleandoc(following.value.value).split()))
            if parts:
                found[node.target.id] = " ".join(parts)
        previous_end = end
    return found


def _named(name: str, convert: Callable[[Any], Any]) -> Callable[[Any], Any]:
    convert.__name__ = name  # argparse names the type in "invalid <name> value: 'x'"
    return convert


def _on_off(convert: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """``convert``, except that a bool becomes ``"on"`` / ``"off"``.

    For a field choosing among ``on``/``off``/…, a YAML file's unquoted ``on``/``off`` (YAML 1.1
    booleans) and the ``true``/``false`` of a setting that was once a switch (``compile: false``)
    mean those choices.
    """

    def read(value: Any) -> Any:
        return ("on" if value else "off") if isinstance(value, bool) else convert(value)

    return _named(getattr(convert, "__name__", "value"), read)


def _keep_suppress(convert: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """``convert``, except that argparse's SUPPRESS default passes unchanged (a position left out)."""

    def keep(value: Any) -> Any:
        return value if value is argparse.SUPPRESS else convert(value)

    return _named(getattr(convert, "__name__", "value"), keep)


def _to_int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise TypeError(f"not an integer: {value!r}")
    return int(value)


def _to_float(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise TypeError(f"not a number: {value!r}")
    return float(value)  # "nan" and "inf" too: the dataclass's check names the flag


def _to_str(value: Any) -> str:
    if isinstance(value, bool):  # YAML 1.1 reads an unquoted on/off/yes/no as a bool
        raise TypeError(f"not a string: {value!r} (quote the value in the YAML file)")
    if not isinstance(value, str):
        raise TypeError(f"not a string: {value!r}")
    return value


def _to_path(value: Any) -> Path:
    if not isinstance(value, (str, os.PathLike)):
        raise TypeError(f"not a path: {value!r}")
    return Path(value)


def _to_bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"not true or false: {value!r}")
    return value


class _Switch(argparse.Action):
    """``--x`` (or ``--no-x``): store ``const`` without a value; a config file's value must be a bool."""

    def __init__(
        self,
        option_strings: Sequence[str],
        dest: str,
        const: bool,
        default: bool,
        help: str | None = None,
    ) -> None:
        super().__init__(
            option_strings, dest, nargs=0, const=const, default=default, type=_to_bool, help=help
        )

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        setattr(namespace, self.dest, self.const)


class _Append(argparse.Action):
    """A repeatable flag for a ``list[X]`` field: each use adds one item; a config file gives the list."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        current = getattr(namespace, self.dest, None)
        setattr(namespace, self.dest, [*(current or []), values])


_SCALARS: dict[Any, Callable[[Any], Any]] = {
    int: _named("int", _to_int),
    float: _named("float", _to_float),
    str: _named("str", _to_str),
    Path: _named("Path", _to_path),
}


def _list_item(annotation: Any) -> Any:
    """``list[X]`` or ``list[X] | None`` -> X; anything else -> None."""
    inner, _ = _optional_inner(annotation)
    if typing.get_origin(inner) is list and len(typing.get_args(inner)) == 1:
        return typing.get_args(inner)[0]
    return None


def _tuple_item(annotation: Any) -> Any:
    """``tuple[X, ...]`` or ``tuple[X, X, X]`` (or either ``| None``) -> X; anything else -> None."""
    inner, _ = _optional_inner(annotation)
    args = typing.get_args(inner) if typing.get_origin(inner) is tuple else ()
    if len(args) == 2 and args[1] is Ellipsis:
        return args[0]
    return args[0] if args and all(a == args[0] for a in args) else None


def _to_list(item: Callable[[Any], Any], value: Any) -> Any:
    """One typed item (a flag's use), or a whole list (a config file's value) item by item."""
    if value is None:
        return None
    if isinstance(value, list):
        return [item(v) for v in value]
    return item(value)


def _optional_inner(annotation: Any) -> tuple[Any, bool]:
    """``X | None`` -> (X, True); anything else -> (annotation, False)."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(annotation)) == 2:
            return args[0], True
    return annotation, False


def _converter(annotation: Any, parse: Callable[[str], Any] | None) -> tuple[Any, tuple[Any, ...] | None]:
    """The ``type`` of a field's flag (a converter, or a type hint jsonargparse checks) and its choices."""
    inner, optional = _optional_inner(annotation)
    choices: tuple[Any, ...] | None = None
    if typing.get_origin(inner) is typing.Literal:
        choices = typing.get_args(inner)
        inner = type(choices[0])
    if parse is not None:
        custom = parse

        as_tuple = typing.get_origin(inner) is tuple

        def convert(value: Any) -> Any:
            if isinstance(value, str):
                return custom(value)
            return tuple(value) if as_tuple and isinstance(value, list) else value

        return _named(getattr(parse, "__name__", "value"), convert), choices
    base = _SCALARS.get(inner)
    if base is None:
        return annotation, choices  # tuples, dicts, nested types: jsonargparse checks them
    if not optional:
        return base, choices
    scalar = base

    def maybe(value: Any) -> Any:
        return None if value is None else scalar(value)

    return _named(base.__name__, maybe), choices


def flag_name(field_name: str) -> str:
    """The option string of a field: ``seq_len`` -> ``--seq-len``.

    Args:
        field_name: the dataclass field's name.

    Returns:
        The flag.
    """
    return "--" + field_name.replace("_", "-")


def add_dataclass_flags(
    parser: ConfigParser,
    cls: type,
    section: str | None = None,
    *,
    flags: Mapping[str, Flag] | None = None,
    exclude: Iterable[str] = (),
    title: str | None = None,
) -> None:
    """Add one flag per field of ``cls`` to ``parser``.

    Args:
        parser: a parser from :func:`config_parser`.
        cls: a dataclass; every field without ``init=False`` and not in ``exclude`` becomes a
            flag (a field without a default is a required flag).
        section: a namespace key to nest the values under (``"data"`` -> ``data.seq_len``, and a
            ``data:`` section in config files); by default they sit at the top level, under
            the field's name. jsonargparse also looks a key up by option string, so a section
            must not be spelled like one of the parser's flags (``--data``).
        flags: per-field departures from the rule (see :class:`Flag`).
        exclude: fields that are not flags (derived ones, such as a vocabulary size the
            tokenizer decides); the dataclass's default applies to them.
        title: the ``--help`` group's heading (default: ``section``, or none).

    Raises:
        TypeError: ``cls`` is not a dataclass.
        ValueError: ``flags`` or ``exclude`` names a field ``cls`` does not have, or a field's
            key or option string is already the parser's.
    """
    if not (dataclasses.is_dataclass(cls) and isinstance(cls, type)):
        raise TypeError(f"{cls!r} is not a dataclass")
    flags = dict(flags or {})
    exclude = set(exclude)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = (set(flags) | exclude) - names
    if unknown:
        raise ValueError(f"{cls.__name__} has no field(s) {', '.join(sorted(unknown))}")
    hints = typing.get_type_hints(cls)
    comments = field_comments(cls)
    heading = title or section
    group: Any = parser.add_argument_group(heading) if heading else parser
    for field in dataclasses.fields(cls):
        if field.name in exclude or not field.init:
            continue
        spec = flags.get(field.name, Flag())
        dest = f"{section}.{field.name}" if section else field.name
        if dest in parser.config_fields:
            raise ValueError(f"{cls.__name__}.{field.name}: {dest!r} is already a flag's key; use a section")
        where = f"{cls.__name__}.{field.name}"
        default = ConfigField(dest, cls, field.name, ()).default
        help_text = spec.help if spec.help is not None else comments.get(field.name, "")
        own, kwargs = _argument_kwargs(where, field.name, hints[field.name], default, spec, help_text)
        kwargs["dest"] = dest
        if spec.positional:
            option_strings = _add_positional(group, where, dest, spec, kwargs)
        else:
            option_strings = tuple(dict.fromkeys((spec.name or own, *spec.aliases)))
            group.add_argument(*option_strings, **kwargs)
        parser.config_fields[dest] = ConfigField(dest, cls, field.name, option_strings)


def _argument_kwargs(
    where: str, name: str, annotation: Any, default: Any, spec: Flag, help_text: str
) -> tuple[str, dict[str, Any]]:
    """The field's own option string and ``add_argument``'s keywords (all but ``dest``)."""
    kwargs: dict[str, Any] = {}
    own = flag_name(name)
    item = _list_item(annotation)
    if annotation is bool:
        negated = default is True
        own = flag_name(("no_" if negated else "") + name)
        if negated and spec.help is None:
            help_text = f"set {name} to false" + (f" ({help_text})" if help_text else "")
        kwargs.update(action=_Switch, const=not negated, default=negated)
    elif spec.nargs is not None:
        if _tuple_item(annotation) not in _SCALARS or spec.parse is not None:
            raise ValueError(f"{where}: nargs needs a tuple of int, float, str or Path")
        kwargs.update(nargs=spec.nargs, type=_SCALARS[_tuple_item(annotation)])
        if default is dataclasses.MISSING:
            kwargs["required"] = True
        else:  # a list: jsonargparse fills a default of several values in place
            kwargs["default"] = None if default is None else list(default)
        if spec.metavar:
            kwargs["metavar"] = spec.metavar
    elif item in _SCALARS and spec.parse is None and spec.positional:
        # the remaining arguments: ``prog formalize "A." "B."``
        kwargs.update(
            nargs="*", type=_SCALARS[item], default=[] if default is dataclasses.MISSING else default
        )
    elif item in _SCALARS and spec.parse is None:
        convert = _named(_SCALARS[item].__name__, functools.partial(_to_list, _SCALARS[item]))
        kwargs.update(
            action=_Append, type=convert, default=None if default is dataclasses.MISSING else default
        )
        if spec.choices is not None:
            kwargs["choices"] = tuple(spec.choices)
    else:
        convert, choices = _converter(annotation, spec.parse)
        choices = tuple(spec.choices) if spec.choices is not None else choices
        if choices is not None and {"on", "off"} <= set(choices):
            convert = _on_off(convert)
        kwargs["type"] = convert
        if choices is not None:
            kwargs["choices"] = choices
        if default is dataclasses.MISSING:
            kwargs["required"] = True
        else:
            kwargs["default"] = default
        if spec.metavar:
            kwargs["metavar"] = spec.metavar
        if spec.const is not None:
            kwargs.update(nargs="?", const=spec.const)
    kwargs["help"] = help_text
    return own, kwargs


def _add_positional(group: Any, where: str, dest: str, spec: Flag, kwargs: dict[str, Any]) -> tuple[str, ...]:
    """Add a positional field (and its flag aliases, if any); returns the aliases."""
    if spec.name or "action" in kwargs or (spec.aliases and "required" in kwargs):
        raise ValueError(
            f"{where}: a positional field has no flag name or switch, and flag aliases only with a default"
        )
    option_strings = spec.aliases
    if option_strings:  # the flag sets the value; the position, unused, leaves it alone
        group.add_argument(*option_strings, **kwargs)
        kwargs["default"] = argparse.SUPPRESS
        kwargs["help"] = f"{kwargs['help']} (or {option_strings[0]})"
        kwargs["type"] = _keep_suppress(kwargs["type"])  # argparse converts a str default
    del kwargs["dest"]
    if not kwargs.pop("required", False):
        kwargs.setdefault("nargs", "?")
    group.add_argument(dest, **kwargs)
    return option_strings


def config_fields(parser: ConfigParser) -> list[ConfigField]:
    """List the flags :func:`add_dataclass_flags` made, in the order they were added.

    Args:
        parser: the command's parser.

    Returns:
        One :class:`ConfigField` per flag: a test compares ``parser.get_defaults()[f.dest]``
        with ``f.default`` to show the defaults exist once.
    """
    return list(parser.config_fields.values())


def flag_problems(parser: ConfigParser) -> list[str]:
    """What keeps a command's flags from being exactly its dataclasses' fields (every test's check).

    Args:
        parser: the command's parser.

    Returns:
        One line per problem: an option no dataclass field made (besides ``--help``, ``--config``
        and jsonargparse's ``--print_config``), or a flag whose default is not its field's (a
        tuple default counts as the list argparse holds); empty when the defaults exist once.
    """
    made = {option for field in config_fields(parser) for option in field.option_strings}
    builtin = {"-h", "--help", CONFIG_FLAG, "--print_config"}
    problems = [
        f"{option}: not made from a dataclass field"
        for action in parser._actions
        for option in action.option_strings
        if option not in made and option not in builtin
    ]
    defaults = parser.get_defaults()
    for field in config_fields(parser):
        expected = field.default
        if expected is dataclasses.MISSING:
            continue
        got = defaults[field.dest]
        if _plain(got) != _plain(expected):
            problems.append(f"{field.dest}: parser default {got!r}, field default {expected!r}")
    return problems


def _leaf_keys(namespace: Namespace) -> set[str]:
    keys: set[str] = set()
    for key, value in namespace.items():
        if isinstance(value, Namespace):
            keys |= {f"{key}.{sub}" for sub in _leaf_keys(value)}
        else:
            keys.add(key)
    return keys


def parse(parser: ConfigParser, argv: Sequence[str] | None = None) -> tuple[Namespace, set[str]]:
    """Parse a command line: defaults, then ``--config`` files, then typed flags.

    Args:
        parser: the command's parser.
        argv: the arguments (default ``sys.argv[1:]``).

    Returns:
        The namespace (``cfg.data.seq_len``) and the keys set by a typed flag or a config file
        (``{"data.seq_len", ...}``), for a resumed run to take the others from its saved config.

    Raises:
        SystemExit: a parse error (one line on stderr, status 2), ``--help`` or
            ``--print_config`` (status 0).
    """
    args = list(sys.argv[1:] if argv is None else argv)
    for path in _config_files(args):
        _check_config_file(parser, path)
    cfg = parser.parse_args(args)
    given = _leaf_keys(parser.parse_args(args, defaults=False))
    given.discard("config")
    return cfg, given


def _config_files(args: Sequence[str]) -> list[str]:
    files = []
    for i, arg in enumerate(args):
        if arg == CONFIG_FLAG and i + 1 < len(args):
            files.append(args[i + 1])
        elif arg.startswith(CONFIG_FLAG + "="):
            files.append(arg.split("=", 1)[1])
    return files


def _check_config_file(parser: ConfigParser, path: str) -> None:
    """A ``--config`` file's problems as one line naming the file (and the line), exit 2.

    jsonargparse's own messages name neither (``in "<unicode string>", line 1``).
    """
    import yaml

    def fail(what: str) -> NoReturn:
        parser.exit(2, f"error: {path}{what} (see {parser.prog} --help)\n")

    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        fail(f": cannot read the config file ({exc.strerror or exc})")
    except UnicodeDecodeError:
        fail(": not UTF-8 text")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "not valid YAML"
        fail(f"{where}: {problem} (expected YAML settings such as `seq_len: 64`)")
    if data is None:
        return
    if not isinstance(data, dict):
        fail(": expected YAML settings (key: value lines), got a " + type(data).__name__)
    known = set(parser.config_fields) | {"config", "__path__"}
    sections = {dest.split(".", 1)[0] for dest in parser.config_fields if "." in dest}

    def keys(mapping: dict, prefix: str = "") -> Iterable[str]:
        for key, value in mapping.items():
            full = f"{prefix}{key}"
            if full in sections and isinstance(value, dict):
                yield from keys(value, full + ".")
            else:
                yield full

    for key in keys(data):
        if key not in known:
            lines = [
                i
                for i, line in enumerate(text.splitlines(), 1)
                if line.lstrip().startswith(f"{key.rsplit('.', 1)[-1]}:")
            ]
            fail(f"{':' + str(lines[0]) if lines else ''}: unknown setting {key!r} for {parser.prog}")


def instantiate(
    parser: ConfigParser, cfg: Namespace, cls: type, section: str | None = None, **overrides: Any
) -> Any:
    """Build ``cls`` from the parsed values of the flags its fields made.

    Only those flags count: another dataclass's field of the same name (a data ``vocab_size``
    beside a model one that is not a flag) is not taken.

    Args:
        parser: the command's parser.
        cfg: the parsed namespace.
        cls: a dataclass given to :func:`add_dataclass_flags`.
        section: the section it was added under, if it was added more than once.
        **overrides: values for fields that are not flags (or that the caller decides).

    Returns:
        ``cls(**values)``; its ``__post_init__`` checks run as usual.
    """
    hints = typing.get_type_hints(cls)
    kwargs = {
        field.name: cfg[field.dest]
        for field in parser.config_fields.values()
        if field.cls is cls and (section is None or field.dest.startswith(f"{section}."))
    }
    for name, value in kwargs.items():  # an nargs flag's list, or a saved run's, for a tuple field
        if isinstance(value, list) and _tuple_item(hints[name]) is not None:
            kwargs[name] = tuple(value)
    kwargs.update(overrides)
    return cls(**kwargs)


def dump_config(parser: ConfigParser, cfg: Namespace, exclude: Iterable[str] = ()) -> str:
    """The YAML of the settings a run used, which ``--config`` loads back.

    Args:
        parser: the command's parser.
        cfg: the namespace the run used (after any change the command made to it).
        exclude: top-level keys to leave out, such as the output folder or ``--resume``.

    Returns:
        YAML text, one key per flag (nested under its section, if any).
    """
    values = cfg.clone()
    for key in {"config", "__path__", *exclude}:
        if key in values:
            del values[key]
    return parser.dump(values, format="yaml", skip_unset=False, skip_validation=True)


def _plain(value: Any) -> Any:
    """Paths as strings and tuples as lists, as YAML writes them."""
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return value


def take_saved_settings(
    parser: ConfigParser, cfg: Namespace, given: set[str], saved: Mapping[type, Mapping[str, Any]]
) -> list[str]:
    """Copy a saved run's values into ``cfg`` for every dataclass flag not in ``given``.

    For ``--resume``: a run continues with its own settings (its data first of all) unless a
    setting is typed again, in which case the run-folder check compares the two.

    Args:
        parser: the command's parser.
        cfg: the parsed namespace, changed in place.
        given: the keys :func:`parse` reported as typed or loaded from a file.
        saved: per dataclass, the run's saved values of its fields (``{DataConfig: {...}}``);
            a field missing there keeps its parsed value.

    Returns:
        The keys whose value came from ``saved``.
    """
    taken = []
    for dest, field in parser.config_fields.items():
        values = saved.get(field.cls) or {}
        if dest in given or field.name not in values:
            continue
        value = values[field.name]
        cfg[dest] = tuple(value) if isinstance(cfg[dest], tuple) and isinstance(value, list) else value
        taken.append(dest)
    return taken


# ------------------------------------------------------------------------------------- commands

Guard = Callable[[Callable[[], int]], int]
_HELP_FLAGS = ("-h", "--help")


@dataclasses.dataclass(frozen=True)
class Command:
    """One subcommand of a member's program (``nanologic generate``, ``seeddelta tiny train``).

    Args:
        parser: makes the command's parser (:func:`config_parser` plus its dataclass flags).
        run: runs it with the parser, the parsed namespace and the keys typed or loaded from a
            file (:func:`parse`); returns the exit status.
        help: its line in the program's ``--help``.
    """

    parser: Callable[[], ConfigParser]
    run: Callable[[ConfigParser, Namespace, set[str]], int]
    help: str


def program_parser(
    prog: str, description: str, commands: Mapping[str, Command], groups: Mapping[str, str] | None = None
) -> argparse.ArgumentParser:
    """The program's own parser: only the list of commands (each command parses its own flags).

    Args:
        prog: the program (``"seeddelta"``).
        description: its ``--help`` description.
        commands: its commands; a two-word name (``"tiny train"``) is a subcommand of a group.
        groups: each group's help line (``{"tiny": "the tiny trained model"}``).

    Returns:
        An argparse parser whose ``parse_args`` prints the help or the error naming the commands.
    """
    parser = argparse.ArgumentParser(prog=prog, description=description)
    sub = parser.add_subparsers(dest="command", required=True)
    group_parsers: dict[str, Any] = {}
    for name, command in commands.items():
        group, _, leaf = name.partition(" ")
        if not leaf:
            sub.add_parser(name, help=command.help, add_help=False)
            continue
        if group not in group_parsers:
            help_text = (groups or {}).get(group, "")
            group_parsers[group] = sub.add_parser(group, help=help_text).add_subparsers(
                dest=f"{group}_command", required=True
            )
        group_parsers[group].add_parser(leaf, help=command.help, add_help=False)
    return parser


def run_command(
    prog: str,
    description: str,
    commands: Mapping[str, Command],
    argv: Sequence[str] | None = None,
    *,
    groups: Mapping[str, str] | None = None,
    guard: Guard | None = None,
) -> int:
    """Run ``prog COMMAND [FLAGS]``: the program's ``main``.

    Args:
        prog: the program.
        description: its ``--help`` description.
        commands: its commands (see :func:`program_parser`).
        argv: the arguments (default ``sys.argv[1:]``).
        groups: help lines of the command groups.
        guard: runs the command's body and turns expected failures into an exit status
            (default :func:`lm_shared.runs.run_guarded`: one ``error: ...`` line, status 2).

    Returns:
        The command's exit status; 2 for an unknown command (after one ``error: ...`` line) or
        none (after argparse's list of commands).

    Raises:
        SystemExit: ``--help``, or a flag that does not parse (one line, status 2).
    """
    args = list(sys.argv[1:] if argv is None else argv)
    name = " ".join(args[:2]) if " ".join(args[:2]) in commands else " ".join(args[:1])
    if name not in commands:
        group_names = {n.split(" ", 1)[0] for n in commands if " " in n}
        first, second = (args + ["", ""])[:2]
        if (
            not first
            or first in _HELP_FLAGS
            or (first in group_names and (not second or second in _HELP_FLAGS))
        ):
            program_parser(prog, description, commands, groups).parse_args(args)  # the help or the list
            return 2
        typed = f"{first} {second}" if first in group_names else first
        what = "a command first" if typed.startswith("-") else f"a command, not {typed!r}"
        print(
            f"error: expected {what}; choose from {', '.join(commands)} (see {prog} --help)", file=sys.stderr
        )
        return 2
    command = commands[name]
    parser = command.parser()
    cfg, given = parse(parser, args[len(name.split()) :])
    return (guard or run_guarded)(lambda: command.run(parser, cfg, given))
