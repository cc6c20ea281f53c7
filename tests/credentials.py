"""The credentials the suite hands out, distinctive enough that finding one in a log means it leaked, and
the scan that looks for them: conftest runs it over every test's captured output and report, and at the
end over the logs of every Ray session the run started; a hit fails the run naming the place, never the
value."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

API_KEY = "sk-linnaeus-test-3c9f1a7e5b"  # the service's key (environment and key file)
S3_ACCESS_KEY = "linnaeus-test-key"  # an access key id is not a secret; the secret key is
S3_SECRET = "linnaeus-test-s3-secret-8d2e6b0f"
SECRETS = {"the serve API key": API_KEY, "the S3 secret key": S3_SECRET}


def find_leaks(text: str, where: str, secrets: dict[str, str] = SECRETS) -> list[str]:
    return [f"{where}: {name}" for name, value in secrets.items() if value in text]


def scan_files(paths, secrets: dict[str, str] = SECRETS) -> list[str]:
    """`file:line: <name>` for every line of `paths` that holds one of `secrets`."""
    found = []
    needles = {name: value.encode() for name, value in secrets.items()}
    for path in paths:
        try:
            data = Path(path).read_bytes()
        except OSError:
            continue  # a log rotated away while the run ended
        for name, needle in needles.items():
            if needle in data:
                for number, line in enumerate(data.splitlines(), 1):
                    if needle in line:
                        found.append(f"{path}:{number}: {name}")
    return found


def ray_session_logs(since: float, root: Path | None = None) -> list[Path]:
    """Every file under the `logs/` of Ray sessions started at or after `since` (epoch seconds)."""
    root = root or Path(os.environ.get("RAY_TMPDIR", tempfile.gettempdir())) / "ray"
    sessions = [p for p in root.glob("session_2*") if p.is_dir() and not p.is_symlink()
                and p.stat().st_mtime >= since]
    return [f for s in sessions for f in (s / "logs").rglob("*") if f.is_file()]
