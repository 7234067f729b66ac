"""The grid: flags and a YAML file expand into the points a user expects, each with its own
run folder name and the cfs bench flags that place it."""

from __future__ import annotations

from pathlib import Path

from cfs.sweep.bench_flags import normalise
from cfs.sweep.grid import Point, build_grid, load_grid_file, parse_seeds, split_top_level


def test_points_multiply_option_axes_only_for_their_strategies():
    grid = build_grid({}, ["finetune", "replay", "replay+lwf"], "0,1", None,
                      ["replay.mem_size=200,2000", "lwf.lam=1,[2, 3]"])
    points = grid.points()
    by_strategy = {s: [p for p in points if p.strategy == s] for s in grid.strategies}
    assert len(by_strategy["finetune"]) == 2  # seeds only: no replay or lwf option
    assert len(by_strategy["replay"]) == 2 * 2
    assert len(by_strategy["replay+lwf"]) == 2 * 2 * 2
    assert {p.options for p in by_strategy["finetune"]} == {()}
    assert Point("split-digits", "replay+lwf", 1, (("lwf.lam", "[2, 3]"), ("replay.mem_size", "200"))) in points
    assert len({p.name for p in points}) == len(points)
    assert points[0].scenario == "split-digits" and [p.seed for p in points[:2]] == [0, 1]


def test_point_flags_and_name():
    p = Point("split-digits", "replay+lwf", 3, (("lwf.lam", "[2, 3]"), ("replay.mem_size", "200")))
    assert p.bench_argv() == ["--scenario", "split-digits", "--strategy", "replay+lwf", "--seed", "3",
                              "-o", "lwf.lam=[2, 3]", "-o", "replay.mem_size=200"]
    assert p.name == "split-digits_replay+lwf_lwf.lam=-2--3-_replay.mem_size=200_seed3"


def test_seeds_and_values():
    assert parse_seeds("0,1,2") == [0, 1, 2]
    assert parse_seeds("3-5") == [3, 4, 5]
    assert parse_seeds([7, 8]) == [7, 8]
    assert split_top_level("1,[2, 3],{a: 1, b: 2},x") == ["1", "[2, 3]", "{a: 1, b: 2}", "x"]


def test_grid_file_and_flags_over_it(tmp_path):
    path = tmp_path / "grid.yaml"
    path.write_text("scenario: split-digits\nstrategies: [finetune, replay]\nseeds: 0-2\n"
                    "options:\n  replay: {mem_size: [100, 200], mode: batch}\n"
                    "bench: {epochs: 3, eval-seen-only: true, logger: [console, jsonl]}\n")
    values = load_grid_file(str(path))
    assert values["options"] == {"replay.mem_size": ["100", "200"], "replay.mode": ["batch"]}
    grid = build_grid(values, None, None, None, [])
    assert (grid.strategies, grid.seeds, len(grid.points())) == (["finetune", "replay"], [0, 1, 2], 3 + 6)
    grid = build_grid(values, ["replay"], "5", None, ["replay.mem_size=50"])
    assert [(p.strategy, p.seed, p.options) for p in grid.points()] == \
        [("replay", 5, (("replay.mem_size", "50"), ("replay.mode", "batch")))]
    # the command line's bench flags win over the file's, repeated ones add up
    cli = normalise([*grid.bench, "--epochs", "1", "--data-root", "rel"], "test")
    assert cli[cli.index("--epochs") + 1] == "1"
    assert cli.count("--logger") == 2 and "--eval-seen-only" in cli
    assert cli[cli.index("--data-root") + 1] == str(Path("rel").absolute())
