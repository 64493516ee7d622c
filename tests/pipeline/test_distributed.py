"""torchrun: two CPU processes (gloo) split the slides with no overlap and no gap."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from histo_encoders.pipeline.distributed import rank_info, shard_slides

_REPO = Path(__file__).resolve().parents[2]


@pytest.mark.distributed
def test_torchrun_ranks_split_slides_without_overlap_or_gap(
    tiny_encoder_dir, openslide_fixtures, tmp_path
):
    from histo_encoders.tools.synthetic import write_synthetic_slide

    slides = tmp_path / "slides"
    slides.mkdir()
    good = [f"s{i}.svs" for i in range(4)]
    for seed, name in enumerate(good):
        write_synthetic_slide(slides / name, width=512, height=512, mpp=0.5, seed=seed)
    shutil.copy(openslide_fixtures / "unreadable.svs", slides)
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(_REPO), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += ["--nproc-per-node", "2", "-m", "histo_encoders", "embed", str(slides)]
    command += ["--encoder", str(tiny_encoder_dir), "--out", str(out), "--device", "cpu"]
    command += ["--workers", "0", "--no-progress"]

    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)

    # One slide is corrupt: the job fails, but only after both ranks finished their share.
    assert result.returncode != 0
    assert sorted(p.name for p in out.glob("*.h5")) == [n.replace(".svs", ".h5") for n in good]
    shares = [
        [
            Path(s["slide"]).name
            for s in json.loads((out / f"summary.rank{r}.json").read_text())["slides"]
        ]
        for r in range(2)
    ]
    assert not set(shares[0]) & set(shares[1])
    assert sorted(shares[0] + shares[1]) == sorted([*good, "unreadable.svs"])
    assert abs(len(shares[0]) - len(shares[1])) <= 1
    merged = json.loads((out / "summary.json").read_text())
    assert merged["counts"]["failed"] == 1
    assert sorted(Path(s["slide"]).name for s in merged["slides"]) == sorted(
        [*good, "unreadable.svs"]
    )


def test_shard_is_a_partition_of_the_sorted_list():
    slides = [f"slide{i:02d}.svs" for i in range(11)]
    shards = [shard_slides(list(reversed(slides)), rank, 4) for rank in range(4)]
    assert sorted(s for shard in shards for s in shard) == slides
    assert sum(len(shard) for shard in shards) == len(slides)
    assert shards[0] == ["slide00.svs", "slide04.svs", "slide08.svs"]


def test_rank_info_reads_torchrun_variables_and_refuses_nonsense():
    assert rank_info({}).world_size == 1
    info = rank_info({"RANK": "3", "WORLD_SIZE": "8", "LOCAL_RANK": "1"})
    assert (info.rank, info.world_size, info.local_rank) == (3, 8, 1)
    with pytest.raises(ValueError, match="RANK must be in"):
        rank_info({"RANK": "2", "WORLD_SIZE": "2"})
    with pytest.raises(ValueError, match="integers"):
        rank_info({"RANK": "x"})
