"""The pack manifest of ``python -m kanode.ensemble``: its schema, checked before any work.

::

    {"members": [{"run_dir": "...", "config_path": "...", "resume": false,
                  "lbfgs_steps": null}, ...]}

Schema (each violation is a ConfigError with one line naming the member and field):

* the file: a regular file of at most :data:`MAX_MANIFEST_BYTES`, UTF-8 JSON
  (nesting too deep for the parser is refused, not a RecursionError);
* the top level: an object whose only key is ``members``;
* ``members``: a list of 1 to :data:`~kanode.cli_args.MAX_ENSEMBLE` objects
  (``fit --seeds``' cap), keys from :data:`MEMBER_KEYS` only;
* ``run_dir``: a non-empty string, not inside another run directory, each
  member's different (:func:`kanode.outdirs.check_out_dir`);
* ``config_path``: a non-empty string when the member starts; a string or
  null when it resumes (the run keeps its own config);
* ``resume``: true or false, the same for every member;
* ``lbfgs_steps`` (optional): null or an integer in [0, ``MAX_STEPS``].
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kanode.cli_args import MAX_ENSEMBLE
from kanode.config import MAX_STEPS, ConfigError
from kanode.outdirs import check_out_dir

__all__ = ["Member", "read_manifest", "MEMBER_KEYS", "MAX_MANIFEST_BYTES"]

MEMBER_KEYS = ("run_dir", "config_path", "resume", "lbfgs_steps")
MAX_MANIFEST_BYTES = 4_000_000  # ~1 kB per member at the member cap


@dataclass(frozen=True)
class Member:
    """One run of the pack: where it goes, its config (None when resuming), whether it resumes."""

    run_dir: str
    config_path: str | None
    resume: bool
    lbfgs_steps: int | None = None


def _load(path: Path) -> Any:
    from systems import read_regular_file

    try:
        size = path.stat().st_size
        if size > MAX_MANIFEST_BYTES:
            raise ConfigError(f"{path}: the manifest is {size} bytes; at most {MAX_MANIFEST_BYTES}")
        text = read_regular_file(path).decode("utf-8")
    except (OSError, ValueError) as exc:  # ValueError: not a regular file, or not UTF-8
        detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError(f"{path}: cannot read the manifest ({' '.join(detail.split())[:80]})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: not JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})") from None
    except RecursionError:
        raise ConfigError(f"{path}: JSON nested too deeply to be an ensemble manifest") from None


def _string(where: str, key: str, value: Any, allow_null: bool) -> str | None:
    if value is None and allow_null:
        return None
    if not isinstance(value, str) or not value.strip() or "\0" in value:
        need = "a non-empty path string" + (" or null" if allow_null else "")
        raise ConfigError(f"{where}: {key} must be {need}, got {json.dumps(value)[:60]}")
    return value


def _member(where: str, raw: Any) -> Member:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where} must be an object with {', '.join(MEMBER_KEYS)}, "
                          f"got {type(raw).__name__}")
    unknown = sorted(set(raw) - set(MEMBER_KEYS))
    missing = [k for k in ("run_dir", "resume") if k not in raw]
    if unknown or missing:
        what = f"unknown key {unknown[0][:30]!r}" if unknown else f"no {missing[0]!r}"
        raise ConfigError(f"{where} has {what}; members have keys {', '.join(MEMBER_KEYS)}")
    resume = raw["resume"]
    if not isinstance(resume, bool):
        raise ConfigError(f"{where}: resume must be true or false, got {json.dumps(resume)[:40]}")
    run_dir = _string(where, "run_dir", raw["run_dir"], allow_null=False)
    config_path = _string(where, "config_path", raw.get("config_path"), allow_null=resume)
    steps = raw.get("lbfgs_steps")
    if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int)
                              or not 0 <= steps <= MAX_STEPS):
        raise ConfigError(f"{where}: lbfgs_steps must be null or an integer in [0, {MAX_STEPS}], "
                          f"got {json.dumps(steps)[:40]}")
    check_out_dir(run_dir, "run", option=f"{where}: run_dir")
    return Member(run_dir, config_path, resume, steps)


def read_manifest(path: str | Path) -> list[Member]:
    """The manifest's members, checked against the schema above; ConfigError (one line) otherwise."""
    path = Path(path)
    data = _load(path)
    if not isinstance(data, dict) or set(data) != {"members"}:
        got = type(data).__name__ if not isinstance(data, dict) else f"keys {sorted(data)[:5]}"
        raise ConfigError(f"{path}: an ensemble manifest is an object with one key, members; got {got}")
    raw = data["members"]
    if not isinstance(raw, list) or not 1 <= len(raw) <= MAX_ENSEMBLE:
        size = f"{len(raw)} members" if isinstance(raw, list) else type(raw).__name__
        raise ConfigError(f"{path}: members must be a list of 1 to {MAX_ENSEMBLE} members, got {size}")
    members = [_member(f"{path}: member {m}", item) for m, item in enumerate(raw)]
    if len({m.resume for m in members}) != 1:
        raise ConfigError(f"{path}: members must all start or all resume")
    dirs = [str(Path(m.run_dir).absolute()) for m in members]
    if len(set(dirs)) != len(dirs):
        twice = next(d for d in dirs if dirs.count(d) > 1)
        raise ConfigError(f"{path}: two members write the run directory {twice[:80]}; each needs its own")
    return members
