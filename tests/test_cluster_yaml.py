"""ray_cluster.yaml must validate against the cluster schema shipped inside the ray package."""
from pathlib import Path

import yaml


def test_ray_cluster_yaml_matches_rays_schema():
    from ray.autoscaler._private.util import validate_config

    config = yaml.safe_load((Path(__file__).parent.parent / "ray_cluster.yaml").read_text())
    validate_config(config)  # raises on any schema violation
    assert config["head_node_type"] in config["available_node_types"]
    assert any("pip install" in c and "wbvb" in c for c in config["setup_commands"])


def test_schema_check_catches_a_typo():
    import pytest
    from ray.autoscaler._private.util import validate_config

    config = yaml.safe_load((Path(__file__).parent.parent / "ray_cluster.yaml").read_text())
    config["max_worker"] = config.pop("max_workers")
    with pytest.raises(Exception):
        validate_config(config)
