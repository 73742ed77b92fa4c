"""The Optuna objects that a sweep's worker and a trial's run both build: the storage (with heartbeats and its
secrets masked in every message), the sampler and the pruner, by name from the space file."""

from __future__ import annotations

import re
import time
import warnings
from typing import Any

from mnist_bench.errors import ConfigError, UserFacingError, first_line
from mnist_bench.sweep.space import SearchSpace

HEARTBEAT_S = (
    30  # a running trial's heartbeat; after 2 of them without one it counts as failed (other machines)
)
MAX_RETRY = 2  # a failed trial's parameters are tried again this many times


def quiet_optuna() -> None:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    # the workers send the heartbeats themselves (study.optimize would, and ask/tell does not)
    warnings.filterwarnings(
        "ignore", message="Heartbeat of storage is supposed to be used with Study.optimize"
    )


def make_storage(url: str, heartbeat_s: int = HEARTBEAT_S) -> Any:
    """An RDB storage (SQLite file, PostgreSQL, MySQL, ...) with heartbeats, so that trials of dead workers
    are found."""
    import optuna
    from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback

    _, _, password, _, _ = _parts(url)
    if password is not None and "@" in password:
        # the driver's parser ends the password at its first '@' and would send the rest on as the host
        raise UserFacingError(
            f"--storage {redact(url)}: its password holds an unencoded '@', which the "
            "database driver reads as the end of the password. Fix: percent-encode it in the "
            "URL ('@' as %40)"
        )
    engine = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {"pool_pre_ping": True}
    try:
        for attempt in range(3):
            try:
                with warnings.catch_warnings():
                    # SQLAlchemy drops a query argument the SQLite driver does not take (?password=) with a
                    # warning
                    warnings.filterwarnings("error", message="Query string argument")
                    return RDBStorage(
                        url,
                        engine_kwargs=engine,
                        heartbeat_interval=heartbeat_s,
                        grace_period=2 * heartbeat_s,
                        heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY),
                    )
            except (ImportError, ModuleNotFoundError):
                raise
            except Warning as err:
                ignored = re.search(r"argument\(s\) (.+?) are not accepted", str(err))
                raise UserFacingError(
                    f"--storage {redact(url)}: the SQLite driver takes no "
                    f"{ignored.group(1) if ignored else 'such'} argument (it would ignore it). "
                    "Fix: drop it from the URL (a SQLite file has no password)"
                ) from None
            except Exception:  # noqa: BLE001 - workers creating the tables at once (SQLite: "already exists",
                if attempt == 2:  # "database is locked"): the later ones try again
                    raise
                time.sleep(1.0 + attempt)
    except (ImportError, ModuleNotFoundError) as err:
        raise UserFacingError(
            f"--storage {redact(url)}: its database driver is not installed ({err}). Fix: "
            "install it (PostgreSQL: pip install 'psycopg[binary]', or mnist-bench[postgres])"
        ) from None
    except UserFacingError:
        raise
    except (optuna.exceptions.StorageInternalError, ValueError, Exception) as err:  # noqa: BLE001 - SQLAlchemy's
        raise UserFacingError(
            f"--storage {redact(url)}: cannot open it ({scrub(first_line(err), url)[:200]}). Fix: "
            "check the URL, the server and its credentials"
        ) from None


SECRET_QUERY_KEY = re.compile(r"pass|pwd|secret|token|key|auth|credential", re.IGNORECASE)


def _parts(url: str) -> tuple[str, str, str | None, str, list[tuple[str, str, str]]]:
    """A URL as (scheme://, user, password or None, host and path, query pairs). The user part ends at the
    last '@' before the query, so a password may hold '@' and ':'; ``sqlite:////a@b/x.db`` has no user
    part."""
    head, sep, tail = url.partition("://")
    address, _, query = tail.partition("?")
    user, password = "", None
    if sep and not address.startswith("/") and "@" in address:
        user, address = address[: address.rfind("@")], address[address.rfind("@") + 1 :]
        if ":" in user:
            user, password = user.split(":", 1)
    pairs = [pair.partition("=") for pair in query.split("&")] if query else []
    return head + sep, user, password, address, pairs


def redact(url: str) -> str:
    """A storage URL with its password and secret query values (``password=``, ``sslkey=``, ...) masked, for
    messages, tables and headers."""
    head, user, password, address, pairs = _parts(url)
    if not head:
        return url
    who = f"{user}:***@" if password is not None else (f"{user}@" if user else "")
    query = "&".join(
        f"{k}{eq}{'***' if eq and v and SECRET_QUERY_KEY.search(k) else v}" for k, eq, v in pairs
    )
    return f"{head}{who}{address}{'?' + query if pairs else ''}"


def scrub(text: str, url: str | None) -> str:
    """``text`` (a library's message) with every secret of ``url`` masked wherever it appears."""
    if not url:
        return text
    _, _, password, _, pairs = _parts(url)
    secrets = [password or "", *(v for k, eq, v in pairs if eq and SECRET_QUERY_KEY.search(k))]
    # pieces of a password a driver split at '@' or ':' (it may quote them back as a host or a port)
    secrets += [piece for piece in re.split("[@:]", password or "") if len(piece) >= 3]
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        text = text.replace(secret, "***")
    return text.replace(url, redact(url))


SAMPLERS = {
    "tpe": "TPESampler",
    "random": "RandomSampler",
    "cmaes": "CmaEsSampler",
    "qmc": "QMCSampler",
    "gp": "GPSampler",
    "grid": "GridSampler",
}
PRUNERS = {
    "median": "MedianPruner",
    "percentile": "PercentilePruner",
    "hyperband": "HyperbandPruner",
    "successive_halving": "SuccessiveHalvingPruner",
    "threshold": "ThresholdPruner",
    "none": "NopPruner",
}


def _build(kind: str, table: dict[str, str], spec: dict[str, Any], source: str, **extra: Any) -> Any:
    import optuna

    spec = dict(spec)
    name = str(spec.pop("name"))
    if name not in table:
        raise ConfigError(f"{source}: {kind} {name!r} is unknown. Fix: one of {', '.join(table)}")
    module = optuna.samplers if kind == "sampler" else optuna.pruners
    cls = getattr(module, table[name])
    for key, value in spec.items():
        _check_type(cls, key, value, f"{source}: {kind} {name}")
    try:
        return cls(**extra, **spec)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{source}: {kind} {name}: {err}") from None


SIMPLE_TYPES = {"int": (int,), "float": (int, float), "bool": (bool,), "str": (str,), "None": (type(None),)}


def _check_type(cls: Any, key: str, value: Any, where: str) -> None:
    """An argument whose annotation is made of int, float, bool, str and None must be one of them: Optuna
    checks none of them itself, and a "3" for an int fails deep inside the first trial's sampling."""
    import inspect

    parameter = inspect.signature(cls.__init__).parameters.get(key)
    if parameter is None:
        return  # the constructor's own TypeError names it
    annotation = parameter.annotation
    if isinstance(annotation, type):
        annotation = annotation.__name__
    names = [part.strip() for part in str(annotation).split("|")]
    if not all(n in SIMPLE_TYPES for n in names):
        return
    fits = any(
        isinstance(value, SIMPLE_TYPES[n]) and not (isinstance(value, bool) and n in ("int", "float"))
        for n in names
    )
    if not fits:
        unquote = ", unquoted in the YAML" if isinstance(value, str) else ""
        raise ConfigError(
            f"{where}: {key} is {value!r} ({type(value).__name__}). Fix: a value of type "
            f"{' or '.join(names)}{unquote}"
        )


def make_sampler(space: SearchSpace, name: str | None, seed: int | None) -> Any:
    spec = {**space.sampler, **({"name": name} if name else {})}
    extra: dict[str, Any] = {}
    if spec["name"] == "grid":
        extra["search_space"] = space.grid()
    if seed is not None and "seed" not in spec:
        extra["seed"] = seed
    return _build("sampler", SAMPLERS, spec, space.source, **extra)


def pruner_spec(space: SearchSpace, name: str | None) -> dict[str, Any]:
    """The pruner's name and arguments: the trial's run builds the same pruner (Optuna keeps none in the
    storage)."""
    return {**space.pruner, **({"name": name} if name else {})}


def make_pruner(spec: dict[str, Any], source: str = "the space") -> Any:
    return _build("pruner", PRUNERS, spec, source)
