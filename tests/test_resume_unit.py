"""engine/resume.py units: what an interrupted run says it keeps."""

from adaptkd.engine.resume import kept_line


def test_kept_line_names_the_last_checkpoint_or_says_there_is_none(tmp_path):
    assert "no checkpoint had been written yet" in kept_line(tmp_path, None)
    assert kept_line(tmp_path, (3, None)).endswith("(epoch 3); resume with --resume")
    assert "(epoch 3, step 40)" in kept_line(tmp_path, (3, 40))
    (tmp_path / "last.pt").write_bytes(b"x")
    assert "is as it was when the run started" in kept_line(tmp_path, None)
