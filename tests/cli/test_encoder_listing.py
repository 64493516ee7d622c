"""`histo-encoders list` and `info` for the field's encoders: the facts a user picks one by."""

from __future__ import annotations

from histo_encoders.cli import main


def _row(printed: str, name: str) -> list[str]:
    return next(line.split() for line in printed.splitlines() if line.startswith(f"{name} "))


def test_list_shows_architecture_embedding_tiles_licence_gate_and_pin(capsys) -> None:
    assert main(["list"]) == 0
    printed = capsys.readouterr().out
    header = printed.splitlines()[0].split()
    assert header[:7] == ["name", "architecture", "dim", "tile", "mpp", "licence", "gated"]
    assert _row(printed, "virchow2") == [
        "virchow2", "vit_huge_patch14_224", "2560", "224", "0.5", "cc-by-nc-nd-4.0", "yes",
        "UNPINNED",
    ]  # fmt: skip
    assert _row(printed, "h-optimus-0")[-3:] == ["apache-2.0", "no", "commit+sha256"]
    assert _row(printed, "phikon")[-1] == "commit"  # pinned commit, hash at first download
    assert _row(printed, "uni2-h")[2] == "1536"
    assert "not published yet" in printed  # moco-camelyon


def test_info_shows_the_full_record_the_rule_the_access_and_the_citation(capsys) -> None:
    assert main(["info", "uni2-h"]) == 0
    info = capsys.readouterr().out
    assert "MahmoodLab/UNI2-h" in info and "'reg_tokens': 8" in info
    assert "gated: request access at https://huggingface.co/MahmoodLab/UNI2-h" in info
    assert "class token after the final norm" in info and "UNPINNED" in info
    assert info.rstrip().endswith("doi:10.1038/s41591-024-02857-3")
    assert main(["info", "lunit_dino_vits8"]) == 0  # an alias
    assert (
        "0b7e0236ce430064b31485bbb6f85e661dc5eca0cde709e8f04d59f1c2b23e0b"
        in capsys.readouterr().out
    )
