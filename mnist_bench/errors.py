"""Errors that are the user's to fix: the CLI prints them as one line, without a traceback."""


class ConfigError(ValueError):
    """An impossible config value; the message names the key (exit code 2)."""


class UserFacingError(RuntimeError):
    """Missing or damaged input (data, weights); the message names the file and the fix (exit code 1). A
    subclass may carry another exit code and the status its run is recorded with."""

    exit_code = 1
    status = "failed"  # metrics.json's status of a run that ends with it


def one_line(message: object, limit: int | None = None) -> str:
    """A message's lines joined into one (whitespace collapsed), cut to ``limit`` characters if given."""
    text = " ".join(str(message).split())
    return text[:limit] if limit else text


def first_line(message: object) -> str:
    """The first non-empty line of a message (the rest of a library's message is usually its traceback)."""
    return next((line.strip() for line in str(message).splitlines() if line.strip()), "")


def user_error_in(err: BaseException | None) -> Exception | None:
    """The ConfigError or UserFacingError that caused ``err``, if any (jsonargparse and Lightning wrap what a
    class's ``__init__`` or a hook raises)."""
    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, (ConfigError, UserFacingError)):
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None
