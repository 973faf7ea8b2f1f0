"""The one atomic writer: the old file or the whole new one, never half, no temporary left behind."""

from __future__ import annotations

from pathlib import Path

import pytest

from anorefine.atomic import write_atomic
from anorefine.run_folder import write_json_atomic


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "deep" / "results.json"
    write_json_atomic(target, {"ok": 1})

    def half_then_fail(temp: str) -> None:
        Path(temp).write_text('{"ok": ')
        raise KeyboardInterrupt  # an interrupted run

    with pytest.raises(KeyboardInterrupt):
        write_atomic(target, half_then_fail)
    assert target.read_text() == '{\n  "ok": 1\n}\n'
    assert sorted(p.name for p in target.parent.iterdir()) == ["results.json"]


def test_the_temporary_keeps_the_suffix_writers_read_the_format_from(tmp_path: Path) -> None:
    seen: list[str] = []
    path = write_atomic(tmp_path / "map.tiff", lambda temp: (seen.append(temp), Path(temp).write_bytes(b"x")))
    assert seen[0].endswith(".tiff") and Path(seen[0]).parent == tmp_path
    assert path.read_bytes() == b"x" and not Path(seen[0]).exists()
