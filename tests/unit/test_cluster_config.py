"""The cluster launcher configurations are valid for Ray's own schema and code."""

from __future__ import annotations

import copy
from pathlib import Path

import jsonschema
import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

from reproducer.autoscaling import MEASURED, _read_types, fits

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


def test_the_autoscaling_node_types_are_read_as_the_pipeline_weighs_them(tmp_path: Path) -> None:
    """The cloud example's node types, as a driver on its head reads the autoscaler's
    config: analysis actors (CPU-only or GPU) fit a worker type the autoscaler can add; a
    resource none declares fits none. A config that cannot be read is no config."""
    types = _read_types(CONFIGS[1])
    assert types is not None and types["head"]["head"]
    assert types["analysis"]["max_workers"] == 8 and types["gpu"]["max_workers"] == 2

    def able(need: dict[str, float]) -> list[str]:
        return [
            name
            for name, spec in types.items()
            if not spec["head"] and fits(need, spec["resources"], unknown=MEASURED)
        ]

    assert able({"CPU": 1, "analysis": 1}) == ["analysis", "gpu"]
    # GPUs count only when declared: the launcher fills them in from the instance type in
    # the config the autoscaler runs with, as here
    assert able({"CPU": 1, "GPU": 1, "analysis": 1}) == []
    types["gpu"]["resources"]["GPU"] = 1
    assert able({"CPU": 1, "GPU": 1, "analysis": 1}) == ["gpu"]
    assert able({"CPU": 1, "tpu_pod": 1}) == []
    broken = tmp_path / "broken.yaml"
    broken.write_text("available_node_types: [not, a, mapping]\n")
    assert _read_types(broken) is None and _read_types(tmp_path / "missing.yaml") is None
