"""Protocol files' paper defaults (issue 11): the MAML meta-batch of Finn et al. (METHODS.md
11.8) in the episodic protocols; test-time inner steps stay strategy options (README)."""

from __future__ import annotations

import pytest

from cfs.plugins import get_plugin_manager


@pytest.mark.parametrize("name, meta_batch", [("omniglot-5w1s", 32), ("omniglot-5w5s", 32), ("omniglot-20w1s", 16),
                                              ("mini-imagenet-5w1s", 4), ("mini-imagenet-5w5s", 2)])
def test_maml_protocols_default_to_the_papers_meta_batch(name, meta_batch):
    assert get_plugin_manager([]).scenarios.get(name).defaults["meta_batch"] == meta_batch


def test_a_flag_still_overrides_the_protocol_meta_batch():
    from cfs.cli import build_parser
    from cfs.commands.bench import bench_config

    pm = get_plugin_manager([])
    parser = build_parser(pm)
    assert bench_config(parser.parse_args(["bench", "--scenario", "omniglot-5w1s"]), pm).meta_batch == 32
    args = parser.parse_args(["bench", "--scenario", "omniglot-5w1s", "--meta-batch", "4"])
    assert bench_config(args, pm).meta_batch == 4
