"""The build commit: where it is read from, `mmbot --version`, and `mmbot_build_info`."""

from __future__ import annotations

import platform
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

import mmbot
from mmbot import buildinfo, cli
from mmbot.buildinfo import (
    COMMIT_ENV_VAR,
    UNKNOWN,
    build_commit,
    read_git_commit,
    resolve_commit,
    version_line,
    write_stamp,
)
from mmbot.config import load_settings
from mmbot.observability import Metrics
from tests.support.env import clear_mmbot_env

SHA_A = "0123456789abcdef0123456789abcdef01234567"
SHA_B = "89abcdef0123456789abcdef0123456789abcdef"
SHA_C = "fedcba9876543210fedcba9876543210fedcba98"


@pytest.fixture
def fresh_commit() -> Iterator[None]:
    """Resolve the commit anew in the test, and again after it for the tests that follow."""
    build_commit.cache_clear()
    yield
    build_commit.cache_clear()


def fake_checkout(
    root: Path,
    head: str,
    *,
    loose: dict[str, str] | None = None,
    packed: dict[str, str] | None = None,
) -> Path:
    """A directory holding a ``.git`` with ``head`` as HEAD and the given refs."""
    git = root / ".git"
    git.mkdir(parents=True)
    (git / "HEAD").write_text(head + "\n")
    for ref, target in (loose or {}).items():
        path = git / ref
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(target + "\n")
    if packed is not None:
        lines = ["# pack-refs with: peeled fully-peeled sorted"]
        for ref, target in packed.items():
            lines.append(f"{target} {ref}")
            if ref.startswith("refs/tags/"):
                lines.append(f"^{SHA_C}")  # the peeled commit of an annotated tag
        (git / "packed-refs").write_text("\n".join(lines) + "\n")
    return root


# ------------------------------------------------------------------------ the sources, in order


def test_the_environment_overrides_everything(tmp_path: Path) -> None:
    stamp = tmp_path / "_commit.txt"
    stamp.write_text(SHA_B + "\n")
    checkout = fake_checkout(tmp_path / "repo", SHA_C)
    found = resolve_commit(environ={COMMIT_ENV_VAR: SHA_A.upper()}, stamp=stamp, checkout=checkout)
    assert found == SHA_A


def test_an_empty_environment_variable_is_not_set(tmp_path: Path) -> None:
    stamp = tmp_path / "_commit.txt"
    stamp.write_text(SHA_B + "\n")
    found = resolve_commit(environ={COMMIT_ENV_VAR: ""}, stamp=stamp, checkout=tmp_path)
    assert found == SHA_B


def test_the_stamp_file_comes_before_the_checkout(tmp_path: Path) -> None:
    stamp = tmp_path / "_commit.txt"
    stamp.write_text(f"  {SHA_B}\n")
    checkout = fake_checkout(tmp_path / "repo", SHA_C)
    assert resolve_commit(environ={}, stamp=stamp, checkout=checkout) == SHA_B


def test_the_checkout_is_read_when_nothing_else_names_a_commit(tmp_path: Path) -> None:
    checkout = fake_checkout(tmp_path / "repo", SHA_C)
    missing = tmp_path / "no-stamp.txt"
    assert resolve_commit(environ={}, stamp=missing, checkout=checkout) == SHA_C


def test_unknown_when_no_source_names_a_commit(tmp_path: Path) -> None:
    assert resolve_commit(environ={}, stamp=tmp_path / "none", checkout=tmp_path) == UNKNOWN


@pytest.mark.parametrize(
    "value",
    ["/home/me/secret", "abc", "v1.2.3", "not-a-commit", "g" * 40, "a" * 65, SHA_A + " extra"],
)
def test_only_an_object_name_is_reported(tmp_path: Path, value: str) -> None:
    # Anything else passes over to the next source: no path or other text reaches a label.
    stamp = tmp_path / "_commit.txt"
    stamp.write_text(value)
    assert resolve_commit(environ={COMMIT_ENV_VAR: value}, stamp=stamp, checkout=tmp_path) == (
        UNKNOWN
    )


def test_a_short_commit_is_accepted(tmp_path: Path) -> None:
    assert resolve_commit(environ={COMMIT_ENV_VAR: "ABC1234"}, checkout=tmp_path) == "abc1234"


# ------------------------------------------------------------------------ the git checkout


def test_head_pointing_at_a_loose_ref(tmp_path: Path) -> None:
    checkout = fake_checkout(
        tmp_path,
        "ref: refs/heads/main",
        loose={"refs/heads/main": SHA_A},
        packed={"refs/heads/main": SHA_B},  # stale: the loose ref is the newer
    )
    assert read_git_commit(checkout) == SHA_A


def test_head_pointing_at_a_packed_ref(tmp_path: Path) -> None:
    checkout = fake_checkout(
        tmp_path,
        "ref: refs/heads/feature/x",
        packed={"refs/heads/main": SHA_A, "refs/tags/v1": SHA_B, "refs/heads/feature/x": SHA_C},
    )
    assert read_git_commit(checkout) == SHA_C


def test_a_detached_head(tmp_path: Path) -> None:
    checkout = fake_checkout(tmp_path, SHA_B, loose={"refs/heads/main": SHA_A})
    assert read_git_commit(checkout) == SHA_B


def test_a_symbolic_ref_is_followed(tmp_path: Path) -> None:
    checkout = fake_checkout(
        tmp_path,
        "ref: refs/heads/alias",
        loose={"refs/heads/alias": "ref: refs/heads/main", "refs/heads/main": SHA_A},
    )
    assert read_git_commit(checkout) == SHA_A


def test_a_linked_worktree(tmp_path: Path) -> None:
    main = fake_checkout(tmp_path / "main", "ref: refs/heads/main", packed={"refs/heads/x": SHA_A})
    worktree_git = main / ".git" / "worktrees" / "wt"
    worktree_git.mkdir(parents=True)
    (worktree_git / "HEAD").write_text("ref: refs/heads/x\n")
    (worktree_git / "commondir").write_text("../..\n")
    worktree = tmp_path / "wt"
    worktree.mkdir()
    (worktree / ".git").write_text(f"gitdir: {worktree_git}\n")
    assert read_git_commit(worktree) == SHA_A


@pytest.mark.parametrize(
    ("head", "refs"),
    [
        ("ref: refs/heads/missing", {}),  # an unborn branch: no commit yet
        ("ref: refs/../../etc/passwd", {}),  # never read outside the refs
        ("ref: refs/heads/a", {"refs/heads/a": "ref: refs/heads/a"}),  # a cycle
        ("garbage", {}),
        ("", {}),
    ],
)
def test_a_checkout_without_a_readable_commit(
    tmp_path: Path, head: str, refs: dict[str, str]
) -> None:
    assert read_git_commit(fake_checkout(tmp_path, head, loose=refs)) is None


def test_no_checkout(tmp_path: Path) -> None:
    assert read_git_commit(tmp_path) is None
    (tmp_path / ".git").write_text("not a gitdir line\n")
    assert read_git_commit(tmp_path) is None


def test_the_package_reads_its_own_checkout_without_git(
    monkeypatch: pytest.MonkeyPatch, fresh_commit: None, tmp_path: Path
) -> None:
    # With no variable and no stamp, the default source is the .git next to the package.
    monkeypatch.delenv(COMMIT_ENV_VAR, raising=False)
    monkeypatch.setattr(buildinfo, "STAMP_FILE", tmp_path / "none")
    checkout = Path(mmbot.__file__).resolve().parent.parent
    expected = read_git_commit(checkout) or UNKNOWN
    assert resolve_commit() == expected
    assert build_commit() == expected


# ------------------------------------------------------------------------ stamping


def test_write_stamp_and_read_it_back(tmp_path: Path) -> None:
    stamp = tmp_path / "_commit.txt"
    assert write_stamp(SHA_A.upper(), stamp) == SHA_A
    assert stamp.read_text() == SHA_A + "\n"
    assert resolve_commit(environ={}, stamp=stamp, checkout=tmp_path) == SHA_A
    # An image built without the argument carries no stale stamp.
    assert write_stamp("", stamp) is None
    assert not stamp.exists()


def test_write_stamp_refuses_what_is_not_a_commit(tmp_path: Path) -> None:
    stamp = tmp_path / "_commit.txt"
    with pytest.raises(ValueError, match="not a git commit"):
        write_stamp("v1.2.3-dirty", stamp)
    assert not stamp.exists()


def test_the_stamp_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stamp = tmp_path / "_commit.txt"
    monkeypatch.setattr(buildinfo, "STAMP_FILE", stamp)
    assert buildinfo.main(["stamp", SHA_A]) == 0
    assert stamp.read_text() == SHA_A + "\n"
    assert buildinfo.main(["stamp", "nope"]) == 1
    assert buildinfo.main(["stamp"]) == 0
    assert not stamp.exists()
    assert buildinfo.main([]) == 2


# ------------------------------------------------------------------------ what reports it


def test_the_commit_is_resolved_once(monkeypatch: pytest.MonkeyPatch, fresh_commit: None) -> None:
    monkeypatch.setenv(COMMIT_ENV_VAR, SHA_A)
    assert build_commit() == SHA_A
    monkeypatch.setenv(COMMIT_ENV_VAR, SHA_B)
    assert build_commit() == SHA_A


def test_mmbot_version_prints_the_commit(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], fresh_commit: None
) -> None:
    monkeypatch.setenv(COMMIT_ENV_VAR, SHA_A)
    # One line even in a narrow terminal: argparse's own version action would wrap it.
    monkeypatch.setenv("COLUMNS", "20")
    assert cli.main(["--version"]) == 0
    out, err = capsys.readouterr()
    assert out == f"mmbot {mmbot.__version__} (commit {SHA_A})\n"
    assert err == ""
    assert version_line() == out.strip()


def test_mmbot_version_says_unknown_without_a_commit(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    fresh_commit: None,
) -> None:
    monkeypatch.setattr(buildinfo, "resolve_commit", lambda: UNKNOWN)
    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out == f"mmbot {mmbot.__version__} (commit unknown)\n"


def test_build_info_carries_the_commit(monkeypatch: pytest.MonkeyPatch, fresh_commit: None) -> None:
    monkeypatch.setenv(COMMIT_ENV_VAR, SHA_B)
    body, _ = Metrics().render()
    families = {f.name: f for f in text_string_to_metric_families(body.decode())}
    (sample,) = families["mmbot_build_info"].samples
    assert sample.labels == {
        "version": mmbot.__version__,
        "commit": SHA_B,
        "python": platform.python_version(),
    }
    assert sample.value == 1


def test_the_settings_accept_the_commit_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    clear_mmbot_env(monkeypatch)
    monkeypatch.setenv(COMMIT_ENV_VAR, SHA_A)
    load_settings()
