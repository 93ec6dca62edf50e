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


def test_a_launch_needs_nothing_but_the_readme_steps():
    """The EFS id comes from one synced file (not the nodes' unset environment), NFS is mounted with
    what the setup installs, the Jobs API and the autoscaler have their packages, torch is the CUDA
    build of one version, and the AMI is Ray's per-region default."""
    root = Path(__file__).parent.parent
    config = yaml.safe_load((root / "ray_cluster.yaml").read_text())
    setup = "\n".join(config["setup_commands"])
    assert "~/wbvb/cluster.env" in setup and "nfs-common" in setup and "mount -t nfs4" in setup
    assert "WBVB_EFS_ID=" in (root / "cluster.env.example").read_text()
    assert "ray[default" in setup and "boto3" in setup
    assert '"torch==' in setup and "download.pytorch.org/whl/cu" in setup
    assert {t["node_config"]["ImageId"] for t in config["available_node_types"].values()} == {"latest_dlami"}
    rules = config["provider"]["security_group"]["IpPermissions"]
    assert any(r["FromPort"] == 2049 == r["ToPort"] for r in rules)
