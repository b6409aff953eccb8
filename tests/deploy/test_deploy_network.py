"""Who may talk to whom under the rendered NetworkPolicies of the dev overlay (the base's
policies plus the dev backends'): every connection cadpipe needs passes, and the ones it does
not need are refused."""

from __future__ import annotations

import pytest
from k8s_manifests import DEV, NAMESPACE, container_ports, objects, pod_labels, workloads
from k8s_netpol import Cluster, Endpoint

INTERNET = Endpoint("internet", None)
CLIENT = Endpoint("browser", "frontend", {"app": "web"})
PROMETHEUS = Endpoint("prometheus", "monitoring", {"app.kubernetes.io/name": "prometheus"})
NAMESPACE_LABELS = {
    name: {"kubernetes.io/metadata.name": name} for name in (NAMESPACE, "frontend", "monitoring")
}


@pytest.fixture(scope="module")
def cluster() -> Cluster:
    return Cluster(objects(DEV, "NetworkPolicy"), NAMESPACE_LABELS)


@pytest.fixture(scope="module")
def pods() -> dict[str, Endpoint]:
    return {
        w["metadata"]["name"]: Endpoint(
            w["metadata"]["name"], NAMESPACE, pod_labels(w), container_ports(w)
        )
        for w in workloads(DEV)
    }


NEEDED = [
    # (from, to, port): REST clients, the gateway's backends, every service's stores
    ("client", "gateway", 8080),
    ("gateway", "scripts", 50051),
    ("gateway", "watcher", 50052),
    # the watcher's monitoring health report asks the script service's grpc.health.v1
    ("watcher", "scripts", 50051),
    ("gateway", "mongodb", 27017),
    # text to CAD: the gateway calls the generator, which uploads, reads status and reports,
    # and asks the LLM provider
    ("gateway", "generator", 50054),
    ("generator", "scripts", 50051),
    ("generator", "watcher", 50052),
    ("generator", "nats", 4222),
    ("generator", "mongodb", 27017),
    ("generator", "internet", 443),
    ("prometheus", "generator", 9090),
    # the web app's preview: the gateway reads presigned URLs (docs/webapp.md)
    ("gateway", "minio", 9000),
    ("gateway", "internet", 443),
    ("scripts", "nats", 4222),
    ("scripts", "mongodb", 27017),
    ("scripts", "minio", 9000),
    ("scripts", "internet", 443),
    ("watcher", "nats", 4222),
    ("watcher", "mongodb", 27017),
    ("watcher", "minio", 9000),
    ("watcher", "internet", 443),
    ("worker", "nats", 4222),
    ("worker", "minio", 9000),
    ("worker", "internet", 443),
    ("minio-bucket", "minio", 9000),
    ("prometheus", "scripts", 9090),
    ("prometheus", "watcher", 9090),
    ("prometheus", "worker", 9090),
    ("prometheus", "gateway", 9090),
]

REFUSED = [
    # nothing outside reaches past the gateway, or the backends
    ("client", "scripts", 50051),
    ("client", "watcher", 50052),
    ("client", "worker", 50053),
    ("client", "generator", 50054),
    # the generator never writes to S3 itself: every attempt is an upload
    ("generator", "minio", 9000),
    ("generator", "worker", 50053),
    ("worker", "generator", 50054),
    ("client", "nats", 4222),
    ("client", "mongodb", 27017),
    ("client", "minio", 9000),
    ("client", "gateway", 9090),
    ("prometheus", "scripts", 50051),
    # the gateway talks gRPC to two services, to MongoDB for API tokens, and reads presigned
    # URLs from S3; nothing else
    ("gateway", "nats", 4222),
    ("gateway", "worker", 50053),
    # the worker, which runs untrusted scripts, reaches NATS and S3 only
    ("worker", "mongodb", 27017),
    ("worker", "scripts", 50051),
    ("worker", "watcher", 50052),
    ("worker", "gateway", 8080),
    ("worker", "internet", 80),
    ("worker", "internet", 22),
    # services do not call each other's back doors
    ("scripts", "gateway", 8080),
    ("scripts", "watcher", 50052),
    ("watcher", "scripts", 9090),
    # the dev backends have no business outside
    ("nats", "internet", 443),
    ("mongodb", "internet", 443),
    ("minio", "internet", 443),
    ("minio-bucket", "mongodb", 27017),
]


def _endpoint(name: str, pods: dict[str, Endpoint]) -> Endpoint:
    fixed = {"internet": INTERNET, "client": CLIENT, "prometheus": PROMETHEUS}
    return fixed.get(name) or pods[name]


@pytest.mark.parametrize(("src", "dst", "port"), NEEDED)
def test_a_connection_cadpipe_needs_passes(
    cluster: Cluster, pods: dict[str, Endpoint], src: str, dst: str, port: int
) -> None:
    assert cluster.allows(_endpoint(src, pods), _endpoint(dst, pods), port)


@pytest.mark.parametrize(("src", "dst", "port"), REFUSED)
def test_a_connection_cadpipe_does_not_need_is_refused(
    cluster: Cluster, pods: dict[str, Endpoint], src: str, dst: str, port: int
) -> None:
    assert not cluster.allows(_endpoint(src, pods), _endpoint(dst, pods), port)


def test_every_pod_resolves_names(cluster: Cluster, pods: dict[str, Endpoint]) -> None:
    for pod in pods.values():
        assert cluster.allows(pod, INTERNET, 53, "UDP"), pod.name
        assert cluster.allows(pod, INTERNET, 53, "TCP"), pod.name


def test_every_pod_is_isolated_both_ways(cluster: Cluster, pods: dict[str, Endpoint]) -> None:
    """The default deny covers every pod, so a workload added later starts closed."""
    newcomer = Endpoint("newcomer", NAMESPACE, {"app": "new"}, {"http": 8000})
    assert not cluster.allows(CLIENT, newcomer, 8000)
    assert not cluster.allows(newcomer, INTERNET, 443)
    assert set(pods) >= {"scripts", "watcher", "worker", "gateway", "nats", "mongodb", "minio"}
