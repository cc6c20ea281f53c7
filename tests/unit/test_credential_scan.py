"""The scan that fails the run when a credential reaches a log (conftest applies it to every test's
captured output and to the Ray logs of the run): it finds a planted key, names the place and never the
value, and looks only at this run's Ray sessions."""

from __future__ import annotations

import os

from tests.credentials import SECRETS, find_leaks, ray_session_logs, scan_files

SECRET = {"the test key": "sk-planted-5e1d"}


def test_a_planted_key_is_found_with_its_file_and_line_and_the_value_is_never_printed(tmp_path):
    log = tmp_path / "session_2026-12-05_00-00-00_1" / "logs" / "serve" / "replica.log"
    log.parent.mkdir(parents=True)
    log.write_text("starting\nAuthorization: Bearer sk-planted-5e1d\nok\n")
    found = scan_files(ray_session_logs(since=0, root=tmp_path), SECRET)
    assert found == [f"{log}:2: the test key"] and "sk-planted" not in found[0]
    assert find_leaks("body: {'detail': 'bad key sk-planted-5e1d'}", "test_x (call)", SECRET) == \
        ["test_x (call): the test key"]
    assert find_leaks("nothing here", "test_x (call)", SECRET) == []


def test_only_sessions_of_this_run_are_scanned(tmp_path):
    old = tmp_path / "session_2026-01-01_00-00-00_1" / "logs"
    new = tmp_path / "session_2026-12-05_00-00-00_2" / "logs"
    for folder in (old, new):
        folder.mkdir(parents=True)
        (folder / "raylet.out").write_text("x")
    os.utime(old.parent, (1_000, 1_000))
    assert ray_session_logs(since=2_000, root=tmp_path) == [new / "raylet.out"]


def test_the_suites_credentials_are_distinctive_enough_to_mean_a_leak():
    # a short or common value would also match innocent text ("testing", "secret")
    assert all(len(value) >= 20 and "-" in value for value in SECRETS.values())
