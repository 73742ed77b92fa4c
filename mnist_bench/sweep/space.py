"""A sweep's search space: a YAML of config keys, each a range or a list, applied to a run as LightningCLI
overrides.

```yaml
objective: val/acc          # a metric of the run's last epoch (history), or test/acc, ... from metrics.json
direction: maximize         # or minimize
sampler: {name: tpe}        # tpe (default), random, cmaes, qmc, gp, grid; other keys go to the sampler
pruner: {name: median}      # median (default), percentile, hyperband, successive_halving, threshold, none
params:
  model.init_args.scheduler.init_args.max_lr: {low: 1.0e-3, high: 1.0e-2, log: true}   # float
  model.init_args.hidden: {choices: [64, 128, 256]}                                     # categorical
  data.batch_size: {low: 64, high: 256, step: 64}                                       # int
```

Any config key ``mnist-bench fit`` accepts can be searched; a trial is an ordinary run with these overrides. A
space is data, like a config: its keys are config keys only (never ``--config``, ``--allow-imports`` or
another option), and no value may name code outside what the sweep's own command line allows (see
:func:`check_value`).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mnist_bench.allowlist import IMPORT_ALLOWLIST, within
from mnist_bench.errors import ConfigError

DIRECTIONS = ("maximize", "minimize")
# the sections of a fit config a space may set; options of the command (config, allow-imports, print_config,
# ckpt_path, ...) are not config values
CONFIG_SECTIONS = (
    "model",
    "data",
    "trainer",
    "optimizer",
    "lr_scheduler",
    "seed_everything",
    "test_weights",
    "best_monitor",
)
KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
DOTTED = re.compile(r"^\s*[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+\s*$")
CONFIG_FILE = re.compile(r"\.(ya?ml|json|jsonnet)\s*$", re.IGNORECASE)
# keys that decide where a run writes: a trial writes only into its own run folder, which the sweep decides
WRITES_TO = frozenset(
    {
        "default_root_dir",
        "dirpath",
        "filename",
        "save_dir",
        "root_dir",
        "log_dir",
        "logdir",
        "ckpt_path",
        "weights_save_path",
        "output",
        "path",
        "tracking_uri",
        "save_path",
    }
)
PLAIN = (str, int, float, bool, type(None))
MAX_VALUE_CHARS = 10_000  # a longer value is no hyperparameter (and past the command line's limit)


@dataclass(frozen=True)
class Param:
    """One searched config key: a float or int range (``log`` for log-uniform, ``step`` for a grid), or
    choices."""

    key: str
    kind: str  # "float", "int" or "categorical"
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple[Any, ...] = ()

    def suggest(self, trial: Any) -> Any:
        if self.kind == "categorical":
            return trial.suggest_categorical(self.key, list(self.choices))
        if self.kind == "int":
            return trial.suggest_int(
                self.key, int(self.low), int(self.high), step=int(self.step or 1), log=self.log
            )
        return trial.suggest_float(self.key, self.low, self.high, step=self.step, log=self.log)


@dataclass(frozen=True)
class SearchSpace:
    params: tuple[Param, ...]
    objective: str = "val/acc"
    direction: str = "maximize"
    sampler: dict[str, Any] = field(default_factory=lambda: {"name": "tpe"})
    pruner: dict[str, Any] = field(default_factory=lambda: {"name": "median"})
    source: str = ""

    def suggest(self, trial: Any) -> dict[str, Any]:
        """The trial's values, key by key."""
        return {p.key: p.suggest(trial) for p in self.params}

    def grid(self) -> dict[str, list[Any]]:
        """Every value of every key, for the grid sampler (choices, or an int/float range with a step)."""
        grid = {}
        for p in self.params:
            if p.kind == "categorical":
                grid[p.key] = list(p.choices)
            elif p.step is not None:
                count = int(math.floor((p.high - p.low) / p.step + 1e-9)) + 1  # never past high
                grid[p.key] = [
                    float(p.low + i * p.step) if p.kind == "float" else int(p.low + i * p.step)
                    for i in range(count)
                ]
            else:
                raise ConfigError(
                    f"{self.source}: the grid sampler needs choices or a step for {p.key}. Fix: give "
                    "it choices: [...] or a step"
                )
        return grid


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{where} must be a finite number, got {value!r}")
    return value


def check_key(key: str, source: str) -> None:
    """A space key is a config key (``model.init_args.dropout``), never an option of the command."""
    where = f"{source}: params.{key}"
    if key.lstrip("-").split(".")[0] not in CONFIG_SECTIONS:
        raise ConfigError(
            f"{where}: a space searches config keys only, not the command's options such as "
            f"--config or --allow-imports. Fix: a key under {', '.join(CONFIG_SECTIONS[:3])}, ..."
        )
    if not KEY.match(key):
        raise ConfigError(
            f"{where}: not a config key (dotted names only, no '-' or '='). Fix: a key such as "
            "model.init_args.dropout"
        )
    writes = next((part for part in key.split(".") if part in WRITES_TO), None)
    if writes:
        raise ConfigError(_writes_message(where, writes))


def _writes_message(where: str, name: str) -> str:
    return (
        f"{where}: {name!r} decides where files are written, and a trial writes only into its own run folder."
        " Fix: drop it from the space"
    )


def check_value(value: Any, where: str, allowed: tuple[str, ...] = (), section: bool = False) -> None:
    """A space value, however nested, names no code outside the import allowlist and ``allowed`` (the sweep's
    own --allow-imports), no other config file and no option. A string is read as the YAML the trial's parser
    reads. ``section``: the value of a whole section (``trainer``, ``model``, ...), where a string with a path
    in it is a config file to the trial's parser, whatever its name."""
    if isinstance(value, dict):
        for key, item in value.items():
            check_value(item, where, allowed)
            if not isinstance(key, str) or key.startswith("-"):
                raise ConfigError(f"{where}: {key!r} is not a config key. Fix: drop it")
            if key in WRITES_TO:
                raise ConfigError(_writes_message(where, key))
        return
    if isinstance(value, list | tuple):
        for item in value:
            check_value(item, where, allowed)
        return
    if not isinstance(value, PLAIN):
        raise ConfigError(
            f"{where}: {str(value)[:60]!r} is not a plain value ({type(value).__name__}). Fix: a "
            "number, a string, true/false, or a list or mapping of those"
        )
    if not isinstance(value, str):
        return
    if len(value) > MAX_VALUE_CHARS:
        raise ConfigError(
            f"{where}: a value {len(value):,} characters long. Fix: at most {MAX_VALUE_CHARS:,}"
        )
    text = value.strip()
    if text.startswith("-") and not _number_text(text):
        raise ConfigError(f"{where}: the value {value!r} reads as a command-line option. Fix: a config value")
    if CONFIG_FILE.search(text) or _names_file(text) or (section and ("/" in text or "\\" in text)):
        raise ConfigError(
            f"{where}: the value {value!r} names a config file, which the trial would read. Fix: "
            "give the values themselves"
        )
    if DOTTED.match(text):  # an import path (a class_path, or a class given by name): the allowlist decides
        if not any(within(text, package) for package in (*IMPORT_ALLOWLIST, *allowed)):
            raise ConfigError(
                f"{where}: the value {value!r} names code outside mnist_bench, torch.optim and "
                "Lightning's trainer classes. Fix: if it is your own package, allow it on the sweep's "
                f"command line: --allow-imports {text.split('.')[0]}"
            )
        return
    if text != value or any(mark in text for mark in ("[", "{", ":", "\n")):
        try:
            parsed = yaml.safe_load(text)
        except yaml.YAMLError:
            return
        if parsed != value:
            check_value(parsed, where, allowed)


def _names_file(text: str) -> bool:
    try:
        return Path(text).expanduser().is_file()
    except (OSError, ValueError):
        return False


def _number_text(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def parse_param(key: str, spec: Any, source: str, allowed: tuple[str, ...] = ()) -> Param:
    where = f"{source}: params.{key}"
    check_key(key, source)
    if not isinstance(spec, dict):
        raise ConfigError(
            f"{where} must be a mapping ({{low: ..., high: ...}} or {{choices: [...]}}), got {spec!r}"
        )
    unknown = set(spec) - {"type", "low", "high", "log", "step", "choices"}
    if unknown:
        raise ConfigError(
            f"{where}: unknown entries {sorted(unknown)}. Fix: low, high, log, step, choices, type"
        )
    kind = spec.get("type")
    if "choices" in spec or kind == "categorical":
        choices = spec.get("choices")
        if not isinstance(choices, list) or not choices:
            raise ConfigError(f"{where}: choices must be a non-empty list")
        for choice in choices:
            check_value(choice, where, allowed, section="." not in key.lstrip("-"))
        return Param(key, "categorical", choices=tuple(choices))
    if "low" not in spec or "high" not in spec:
        raise ConfigError(f"{where}: needs low and high (a range) or choices (a list)")
    low, high = _number(spec["low"], f"{where}.low"), _number(spec["high"], f"{where}.high")
    step = _number(spec["step"], f"{where}.step") if spec.get("step") is not None else None
    if step is not None and step <= 0:
        raise ConfigError(f"{where}: step must be above 0, got {step}")
    log = bool(spec.get("log", False))
    if kind is None:
        kind = "int" if all(isinstance(v, int) for v in (low, high, step or 1)) else "float"
    if kind not in ("int", "float"):
        raise ConfigError(f"{where}: type {kind!r} is unknown. Fix: float, int or categorical")
    if not low < high:
        raise ConfigError(f"{where}: low {low} must be below high {high}")
    if log and (low <= 0 or step is not None):
        raise ConfigError(f"{where}: a log range needs low > 0 and no step")
    return Param(key, kind, low=low, high=high, log=log, step=step)


def load_space(path: str | Path, allowed: tuple[str, ...] | list[str] = ()) -> SearchSpace:
    """Reads and checks a search-space YAML; every mistake is one line that names the file and the key.
    ``allowed``: the packages the sweep's own command line allows its trials to import."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        json.dumps(
            raw, default=str
        )  # a structure that refers to itself (an anchor inside its own value) fails
    except OSError as err:
        raise ConfigError(
            f"--space {path}: cannot read it ({err.strerror}). Fix: give a search-space YAML"
        ) from None
    except UnicodeDecodeError as err:
        raise ConfigError(
            f"--space {path}: not UTF-8 text (byte {err.start}). Fix: save it as UTF-8"
        ) from None
    except yaml.YAMLError as err:
        raise ConfigError(f"--space {path}: not valid YAML ({str(err).splitlines()[0]})") from None
    except (ValueError, RecursionError):
        raise ConfigError(
            f"--space {path}: a value refers to itself (a YAML anchor used inside its own value). "
            "Fix: write the values out"
        ) from None
    if not isinstance(raw, dict) or not isinstance(raw.get("params"), dict) or not raw["params"]:
        raise ConfigError(f"--space {path}: needs a params mapping of config keys to ranges or choices")
    unknown = set(raw) - {"objective", "direction", "sampler", "pruner", "params"}
    if unknown:
        raise ConfigError(
            f"--space {path}: unknown entries {sorted(unknown)}. Fix: objective, direction, sampler, "
            "pruner, params"
        )
    direction = raw.get("direction", "maximize")
    if direction not in DIRECTIONS:
        raise ConfigError(f"--space {path}: direction {direction!r}. Fix: maximize or minimize")
    params = tuple(parse_param(str(k), v, str(path), tuple(allowed)) for k, v in raw["params"].items())
    named = {}
    for section in ("sampler", "pruner"):
        value = raw.get(section, {})
        value = {"name": value} if isinstance(value, str) else value
        if not isinstance(value, dict):
            raise ConfigError(f"--space {path}: {section} must be a name or a mapping with a name")
        named[section] = value
    return SearchSpace(
        params=params,
        objective=str(raw.get("objective", "val/acc")),
        direction=direction,
        sampler={"name": "tpe", **named["sampler"]},
        pruner={"name": "median", **named["pruner"]},
        source=str(path),
    )


def override_args(values: dict[str, Any]) -> list[str]:
    """A trial's values as ``fit`` arguments (``--key=value``; lists and mappings as YAML flow)."""
    args = []
    for key, value in values.items():
        text = value if isinstance(value, str) else yaml.safe_dump(value, default_flow_style=True).strip()
        text = text.removesuffix("\n...").strip()
        args.append(f"--{key}={text}")
    return args
