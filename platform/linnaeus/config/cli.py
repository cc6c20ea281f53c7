"""One way to configure every job: `--config FILE`, the job's flags for its common fields, and `--set
key.sub=value`, validated into the job's typed configuration with one error format.

Later sources win: the file, then the flags, then each `--set` in order. A flag is a shortcut for a
dotted key (`--model` is `model`, `--data` is `data.data` in a training recipe); every other field is
reachable with `--set`.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Callable, Sequence, TypeVar

from pydantic import BaseModel

from linnaeus.config.base import apply_overrides, read_yaml, set_dotted, validate

M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True)
class Flag:
    name: str  # "--text-type"
    key: str  # the dotted field it sets: "text_type"
    help: str = ""
    type: Callable[[str], object] = str
    choices: tuple[str, ...] | None = None
    repeat: bool = False  # may be given several times; the values make a list

    @property
    def dest(self) -> str:
        return self.name.lstrip("-").replace("-", "_")


def comma_list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def comma_ints(text: str) -> list[int]:
    try:
        return [int(part) for part in comma_list(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected comma-separated integers") from None


def add_config_arguments(parser: argparse.ArgumentParser, flags: Sequence[Flag], config_help: str | None = None
                         ) -> None:
    parser.add_argument("--config", metavar="FILE", help=config_help or
                        "YAML file of this job's settings (its flags and --set override it)")
    for flag in flags:
        parser.add_argument(flag.name, dest=flag.dest, type=flag.type, default=None, help=flag.help,
                            choices=flag.choices, action="append" if flag.repeat else "store")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="set any field by dotted key, e.g. --set s3.endpoint_url=http://... (repeatable)")


def config_from_args(model: type[M], args: argparse.Namespace, flags: Sequence[Flag], where: str,
                     computed: dict[str, object] | None = None) -> M:
    """The job's configuration from its --config file, flags (and values the job `computed` from its own
    arguments, e.g. a file's lines) and --set overrides; ConfigError if invalid."""
    raw = read_yaml(args.config) if args.config else {}
    values = {flag.key: getattr(args, flag.dest) for flag in flags}
    for key, value in {**values, **(computed or {})}.items():
        if value is not None:
            set_dotted(raw, key, value)
    return validate(model, apply_overrides(raw, args.overrides), f"{where} ({args.config})" if args.config else where)
