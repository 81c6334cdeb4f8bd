"""The cluster launcher configurations are valid for Ray's own schema and code."""

from __future__ import annotations

import copy
from pathlib import Path

import jsonschema
import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

REPO = Path(__file__).parents[2]
CONFIGS = [REPO / "ray_cluster.yaml", REPO / "cluster" / "examples" / "ray_cluster_aws.yaml"]


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_valid_for_rays_cluster_launcher(path: Path) -> None:
    config = yaml.safe_load(path.read_text())
    validate_config(prepare_config(copy.deepcopy(config)))
    setup = " ".join(config["setup_commands"])
    assert "pip install" in setup and "~/ray-reproducer" in setup  # installs the project
    head = " ".join(config["head_start_ray_commands"])
    worker = " ".join(config["worker_start_ray_commands"])
    assert "ray start --head" in head and "ray start --address=$RAY_HEAD_IP" in worker


def test_the_on_premises_cluster_offers_ingest_on_the_head_and_analysis_on_workers() -> None:
    config = yaml.safe_load(CONFIGS[0].read_text())
    assert config["provider"]["type"] == "local" and config["provider"]["worker_ips"]
    assert """--resources='{"ingest": 1}'""" in " ".join(config["head_start_ray_commands"])
    assert """--resources='{"analysis": 2}'""" in " ".join(config["worker_start_ray_commands"])


def test_a_broken_config_is_caught() -> None:
    config = yaml.safe_load(CONFIGS[0].read_text())
    config["provider"]["worker_ips"] = "not a list"
    with pytest.raises(jsonschema.ValidationError, match=r"not of type .array."):
        validate_config(prepare_config(config))
