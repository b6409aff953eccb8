"""Where the command line finds cadpipe: the API URL and the bearer token.

`cadpipe login` writes them to `config.json` in the user's config directory (platformdirs:
`$XDG_CONFIG_HOME/cadpipe` or `~/.config/cadpipe` on Linux), readable by the user only.
`CADPIPE_URL` and `CADPIPE_TOKEN` override the file, and `--url`/`--token` override both.
"""

from __future__ import annotations

import json
import os
import pathlib
import tempfile
from dataclasses import dataclass

import platformdirs

DEFAULT_URL = "http://127.0.0.1:8080"
URL_ENV = "CADPIPE_URL"
TOKEN_ENV = "CADPIPE_TOKEN"
FILE_NAME = "config.json"


class ConfigError(Exception):
    """The config file cannot be read or written; the message says which file and why."""


@dataclass(frozen=True)
class Config:
    url: str
    token: str

    @property
    def api(self) -> str:
        return self.url.rstrip("/") + "/api"


def config_dir() -> pathlib.Path:
    return pathlib.Path(platformdirs.user_config_dir("cadpipe", appauthor=False))


def config_path() -> pathlib.Path:
    return config_dir() / FILE_NAME


def read_file(path: pathlib.Path | None = None) -> dict[str, str]:
    """The saved settings ({} when there is no file yet)."""
    path = path or config_path()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path} is not valid JSON ({exc}); run `cadpipe login` again") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path} should hold a JSON object; run `cadpipe login` again")
    return {k: v for k, v in data.items() if isinstance(k, str) and isinstance(v, str)}


def resolve(url: str | None = None, token: str | None = None) -> Config:
    """Flags, then the environment, then the file, then the local default URL."""
    saved = read_file()
    return Config(
        url=url or os.environ.get(URL_ENV) or saved.get("url") or DEFAULT_URL,
        token=token or os.environ.get(TOKEN_ENV) or saved.get("token") or "",
    )


def save(config: Config, path: pathlib.Path | None = None) -> pathlib.Path:
    """Writes the file atomically, created with mode 0600 in a 0700 directory, so the token is
    never readable by others, not even for a moment."""
    path = path or config_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".config-", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:  # mkstemp creates it 0600
                json.dump({"url": config.url, "token": config.token}, f, indent=2)
                f.write("\n")
            os.chmod(tmp, 0o600)
            os.replace(tmp, path)
        except BaseException:
            pathlib.Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as exc:
        raise ConfigError(f"cannot write {path}: {exc.strerror}") from exc
    return path
