"""The deploy recipes parse and name only options that the installed libraries accept."""

from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path

import pytest
import yaml

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
ENDPOINTS = sorted(DEPLOY.glob("endpoints/*/config.yaml"))

pytestmark = pytest.mark.filterwarnings("ignore")


KUBECONFIG = """apiVersion: v1
kind: Config
clusters: [{name: local, cluster: {server: "https://127.0.0.1:6443"}}]
users: [{name: tester, user: {token: not-a-secret}}]
contexts: [{name: local, context: {cluster: local, user: tester}}]
current-context: local
"""


def test_all_endpoint_configs_present():
    assert {p.parent.name for p in ENDPOINTS} == {"laptop", "slurm-gpu", "htcondor", "kubernetes"}


def _params(*classes: type) -> set[str]:
    names: set[str] = set()
    for cls in classes:
        for klass in cls.__mro__:
            if "__init__" in vars(klass):
                names |= set(inspect.signature(klass.__init__).parameters)
    return names - {"self", "args", "kwargs"}


@pytest.mark.parametrize("path", ENDPOINTS, ids=lambda p: p.parent.name)
def test_endpoint_config(path, tmp_path, monkeypatch):
    pytest.importorskip("globus_compute_endpoint")
    import parsl.providers
    from globus_compute_endpoint.endpoint.config.utils import load_config_yaml
    from globus_compute_endpoint.engines import GlobusComputeEngine
    from parsl.executors import HighThroughputExecutor

    text = path.read_text()
    data = yaml.safe_load(text)
    engine = data["engine"]
    assert engine["type"] == "GlobusComputeEngine"
    assert engine["encrypted"] is True, "interchange traffic must be encrypted"
    assert "# Network:" in text, "the recipe must say what listens and who may reach it"
    assert set(engine) - {"type", "provider"} <= _params(
        GlobusComputeEngine, HighThroughputExecutor
    )
    provider = engine["provider"]
    cls = getattr(parsl.providers, provider["type"])
    assert set(provider) - {"type", "launcher"} <= _params(cls)
    if "worker_init" in provider:
        assert re.search(r"pyhf-dask-env|DASK_PYHF_DASK__", provider["worker_init"])
    if path.parent.name == "laptop":
        assert engine["address"] == "127.0.0.1"
    # build the real engine from the file (site-specific addresses replaced by loopback)
    if isinstance(engine.get("address"), dict):
        import parsl.addresses

        assert hasattr(parsl.addresses, engine["address"]["type"])
    engine["address"] = "127.0.0.1"
    if provider["type"] == "KubernetesProvider":
        # the provider reads a kube config when built: point it at a loopback cluster
        kubeconfig = tmp_path / "kubeconfig"
        kubeconfig.write_text(KUBECONFIG)
        monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
        from kubernetes.config import kube_config  # reads KUBECONFIG at import

        monkeypatch.setattr(kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", str(kubeconfig))
    monkeypatch.chdir(tmp_path)
    config = load_config_yaml(yaml.safe_dump(data))
    try:
        assert type(config.engine).__name__ == "GlobusComputeEngine"
        assert config.engine.executor.encrypted
    finally:
        config.engine.shutdown()


def test_parsl_config_loads(tmp_path, monkeypatch):
    pytest.importorskip("parsl")
    import parsl.addresses

    from pyhf_dask.executors.parsl import load_config

    monkeypatch.setattr(parsl.addresses, "address_by_interface", lambda ifname: "127.0.0.1")
    monkeypatch.chdir(tmp_path)
    config = load_config(DEPLOY / "parsl_slurm.py")
    (htex,) = config.executors
    assert htex.encrypted and htex.loopback_address == "127.0.0.1"
    assert htex.provider.__class__.__name__ == "SlurmProvider"
    assert config.retries == 0


def test_dask_jobqueue_example_names_known_options():
    source = (DEPLOY / "dask_jobqueue_slurm.py").read_text()
    tree = ast.parse(source)
    calls = [
        n
        for n in ast.walk(tree)
        if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "SLURMCluster"
    ]
    (call,) = calls
    names = {k.arg for k in call.keywords}
    try:
        from dask_jobqueue import SLURMCluster
    except ImportError:  # not a pyhf_dask dependency: check against the documented names
        known = {
            "queue",
            "account",
            "cores",
            "processes",
            "memory",
            "walltime",
            "interface",
            "scheduler_options",
            "job_extra_directives",
            "job_script_prologue",
        }
    else:
        known = _params(SLURMCluster) | {
            "scheduler_options",
            "job_extra_directives",
            "job_script_prologue",
            "interface",
        }
    assert names <= known
    assert "127.0.0.1:8787" in source  # dashboard on loopback


def test_containerfile_and_guide():
    recipe = (DEPLOY / "Containerfile").read_text()
    assert re.search(r"^FROM \S*cuda\S*", recipe, re.MULTILINE)
    assert "pip install" in recipe and "jax[cuda12]" in recipe and "pyhf_dask[" in recipe
    guide = (DEPLOY / "GUIDE.md").read_text()
    for needle in (
        "globus-compute-endpoint configure",
        "--executor globus",
        "--endpoint",
        "same pyhf_dask",
        "VersionMismatch",
        "encrypted: true",
        "10 MB",
    ):
        assert needle in guide, needle
    for option in re.findall(r"--[a-z][a-z-]+", guide):
        assert option in {
            "--region",
            "--patch",
            "--executor",
            "--kernel",
            "--endpoint",
            "--chunk-size",
            "--retries",
            "--timeout",
            "--parsl-config",
            "--scheduler-address",
        }, option
