"""The worker scaled on its queue by KEDA (deploy/k8s/components/keda-worker, used by the
overlay dev-keda): the ScaledObject names what KEDA's nats-jetstream scaler reads, the stream
and the durable consumer the worker really uses, a monitoring endpoint that exists in the
overlay and is open to the KEDA operator; it replaces the CPU autoscaler without changing the
bounds or the rhythm; and against a real nats-server, the lag KEDA computes from /jsz is the
number of uploads waiting for or running on the workers.

The scaler's metadata fields are those of kedacore/keda pkg/scalers/nats_jetstream_scaler.go
(natsJetStreamMetadata, at the commit the vendored CRD comes from) and of KEDA's documentation
of the nats-jetstream trigger; the CRD's schema leaves trigger metadata an open map of
strings, so these tests hold the names.
"""

from __future__ import annotations

import asyncio
import json
import math
import pathlib
import re
import tempfile
import urllib.parse
import urllib.request
from typing import Any

import pytest
import yaml
from k8s_manifests import (
    BASE,
    DEV,
    DEV_KEDA,
    KEDA_COMPONENT,
    NAMESPACE,
    OPERATIONS_DOC,
    container_ports,
    env_values,
    named,
    objects,
    pod_labels,
    rendered,
    settings_of,
    workloads,
)
from k8s_netpol import Cluster, Endpoint
from k8s_render import object_id, render

from cadpipe import messaging
from cadpipe.devstack import NatsServer
from cadpipe.settings import NatsSettings
from cadpipe.v1 import events_pb2
from services.worker.intake import IntakeConfig, consumer_config

# natsJetStreamMetadata's `keda:"name=..."` tags; the optional ones have defaults there
SCALER_FIELDS = {
    "natsServerMonitoringEndpoint",
    "account",
    "accountID",
    "stream",
    "consumer",
    "lagThreshold",
    "activationLagThreshold",
    "useHttps",
}
SCALER_REQUIRED = {"natsServerMonitoringEndpoint", "stream", "consumer"}  # and account or ID
KEDA_OPERATOR = Endpoint("keda-operator", "keda", {"app": "keda-operator"})


def scaled_object(directory: pathlib.Path) -> dict[str, Any]:
    return named(directory, "ScaledObject", "worker")


def trigger(directory: pathlib.Path) -> dict[str, str]:
    (only,) = scaled_object(directory)["spec"]["triggers"]
    assert only["type"] == "nats-jetstream"
    return dict(only["metadata"])


def worker_consumer(directory: pathlib.Path) -> str:
    """The durable the worker pods bind to: CONSUMER_NAME as their manifest sets it, else the
    worker's default."""
    worker = named(directory, "Deployment", "worker")
    default = settings_of("worker").default("consumer_name")
    return env_values(directory, worker).get("CONSUMER_NAME", default)


# --- what the trigger names -------------------------------------------------------------------


def test_the_trigger_uses_only_fields_the_scaler_reads_and_all_it_needs() -> None:
    metadata = trigger(DEV_KEDA)
    assert set(metadata) <= SCALER_FIELDS, set(metadata) - SCALER_FIELDS
    assert SCALER_REQUIRED <= set(metadata)
    assert {"account", "accountID"} & set(metadata)
    assert int(metadata["lagThreshold"]) >= 1
    # host:port: the scaler puts http:// (https:// with useHttps) and /jsz around it itself
    assert re.fullmatch(r"[a-z0-9.-]+:\d+", metadata["natsServerMonitoringEndpoint"])


def test_the_trigger_watches_the_stream_and_durable_the_workers_consume() -> None:
    metadata = trigger(DEV_KEDA)
    assert metadata["stream"] == messaging.SCRIPTS_STREAM
    assert metadata["consumer"] == worker_consumer(DEV_KEDA)
    # in the base too: the component is meant for any overlay of it
    assert trigger_of_component()["consumer"] == worker_consumer(BASE)


def trigger_of_component() -> dict[str, str]:
    (scaled,) = [
        o
        for o in yaml.safe_load_all((KEDA_COMPONENT / "scaledobject.yaml").read_text())
        if o and o["kind"] == "ScaledObject"
    ]
    (only,) = scaled["spec"]["triggers"]
    return dict(only["metadata"])


def test_the_monitoring_endpoint_is_the_dev_nats_monitoring_port() -> None:
    host, port = trigger(DEV_KEDA)["natsServerMonitoringEndpoint"].rsplit(":", 1)
    name, namespace = host.split(".")[:2]
    assert host == f"{name}.{namespace}.svc.cluster.local" and namespace == NAMESPACE
    service = named(DEV_KEDA, "Service", name)
    (service_port,) = [p for p in service["spec"]["ports"] if p["port"] == int(port)]
    nats = named(DEV_KEDA, "StatefulSet", name)
    assert container_ports(nats)[service_port["targetPort"]] == int(port)
    # ... where nats-server serves HTTP monitoring, in its global account (no accounts)
    config = named(DEV_KEDA, "ConfigMap", "nats-config")["data"]["nats.conf"]
    assert re.search(rf"^\s*http_port:\s*{port}\s*$", config, re.M)
    assert "accounts" not in config and trigger(DEV_KEDA)["account"] == "$G"


# --- one autoscaler, the same bounds and rhythm -------------------------------------------------


def test_dev_keda_is_dev_with_the_worker_hpa_swapped_for_the_scaled_object() -> None:
    dev = {object_id(o) for o in rendered(DEV)}
    keda = {object_id(o) for o in rendered(DEV_KEDA)}
    assert dev - keda == {("HorizontalPodAutoscaler", NAMESPACE, "worker")}
    assert keda - dev == {
        ("ScaledObject", NAMESPACE, "worker"),
        ("NetworkPolicy", NAMESPACE, "dev-nats-monitoring-from-keda"),
    }
    for obj in rendered(DEV_KEDA):
        if obj["kind"] not in ("ScaledObject", "NetworkPolicy"):
            assert obj in rendered(DEV), object_id(obj)


@pytest.mark.parametrize(("plain", "with_keda"), [(DEV, DEV_KEDA), (BASE, None)])
def test_the_scaled_object_keeps_the_cpu_autoscalers_bounds_and_rhythm(
    plain: pathlib.Path, with_keda: pathlib.Path | None
) -> None:
    hpa = named(plain, "HorizontalPodAutoscaler", "worker")["spec"]
    if with_keda is not None:
        spec = scaled_object(with_keda)["spec"]
    else:  # the component on the base, as a production overlay would use it
        spec = _component_on(BASE)
    assert (spec["minReplicaCount"], spec["maxReplicaCount"]) == (
        hpa["minReplicas"],
        hpa["maxReplicas"],
    )
    assert spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"] == hpa["behavior"]
    assert spec["minReplicaCount"] <= spec["fallback"]["replicas"] <= spec["maxReplicaCount"]


def _component_on(base: pathlib.Path) -> dict[str, Any]:
    """The component applied to the base alone, rendered in a scratch kustomization."""
    with tempfile.TemporaryDirectory() as scratch:
        (pathlib.Path(scratch) / "kustomization.yaml").write_text(
            f"resources: [{base}]\ncomponents: [{KEDA_COMPONENT}]\n"
        )
        built = render(pathlib.Path(scratch))
    assert ("HorizontalPodAutoscaler", NAMESPACE, "worker") not in {object_id(o) for o in built}
    (scaled,) = [o for o in built if o["kind"] == "ScaledObject"]
    return dict(scaled["spec"])


# --- the network ------------------------------------------------------------------------------


def _cluster(directory: pathlib.Path) -> tuple[Cluster, dict[str, Endpoint]]:
    labels = {name: {"kubernetes.io/metadata.name": name} for name in (NAMESPACE, "keda")}
    pods = {
        w["metadata"]["name"]: Endpoint(
            w["metadata"]["name"], NAMESPACE, pod_labels(w), container_ports(w)
        )
        for w in workloads(directory)
    }
    return Cluster(objects(directory, "NetworkPolicy"), labels), pods


def test_only_the_keda_operator_reaches_the_nats_monitoring_port() -> None:
    cluster, pods = _cluster(DEV_KEDA)
    nats = pods["nats"]
    assert cluster.allows(KEDA_OPERATOR, nats, 8222)
    assert not cluster.allows(KEDA_OPERATOR, nats, 4222)  # monitoring only, no messages
    assert not cluster.allows(pods["gateway"], nats, 8222)
    other_in_keda = Endpoint("other", "keda", {"app": "keda-admission-webhooks"})
    assert not cluster.allows(other_in_keda, nats, 8222)
    plain, plain_pods = _cluster(DEV)
    assert not plain.allows(KEDA_OPERATOR, plain_pods["nats"], 8222)


# --- what KEDA reads, from a real nats-server --------------------------------------------------


def keda_jsz_url(endpoint: str, account: str) -> str:
    """As the scaler builds it (getNATSJetStreamMonitoringURL)."""
    query = urllib.parse.urlencode({"acc": account, "consumers": "true", "config": "true"})
    return f"http://{endpoint}/jsz?{query}"


def keda_lag(jsz: dict[str, Any], metadata: dict[str, str]) -> int:
    """As the scaler computes it: in the account (by id or name), the stream, the consumer:
    num_pending + num_ack_pending."""
    for account in jsz.get("account_details", []):
        if metadata["account"] not in (account.get("id"), account.get("name")):
            continue
        for stream in account.get("stream_detail", []):
            if stream["name"] != metadata["stream"]:
                continue
            for consumer in stream.get("consumer_detail", []):
                if consumer["name"] == metadata["consumer"]:
                    return int(consumer["num_pending"]) + int(consumer["num_ack_pending"])
    raise AssertionError(f"consumer {metadata['consumer']} not found: {json.dumps(jsz)[:500]}")


def desired_workers(lag: int, spec: dict[str, Any]) -> int:
    """The HPA's answer for an AverageValue target of lagThreshold per pod."""
    wanted = math.ceil(lag / int(spec["triggers"][0]["metadata"]["lagThreshold"]))
    return min(spec["maxReplicaCount"], max(spec["minReplicaCount"], wanted))


async def test_the_lag_keda_reads_counts_waiting_and_running_jobs() -> None:
    metadata = trigger(DEV_KEDA)
    worker = settings_of("worker")
    with NatsServer(monitoring=True) as server:
        metadata["natsServerMonitoringEndpoint"] = f"127.0.0.1:{server.monitor_port}"
        nc = await messaging.connect(NatsSettings(nats_url=server.url), name="keda-test")
        try:
            js = nc.jetstream()
            await messaging.ensure_streams(js)
            # the durable exactly as the worker creates it
            await js.add_consumer(
                messaging.SCRIPTS_STREAM,
                consumer_config(
                    IntakeConfig(
                        consumer_name=worker_consumer(DEV_KEDA),
                        filter_subjects=tuple(
                            worker.cls.model_fields["consumer_filter_subjects"].get_default(
                                call_default_factory=True
                            )
                        ),
                        ack_wait_seconds=worker.default("ack_wait_seconds"),
                        max_deliver=worker.default("max_deliver"),
                        concurrency=1,
                        fetch_timeout_seconds=1.0,
                    )
                ),
            )

            async def lag() -> int:
                url = keda_jsz_url(metadata["natsServerMonitoringEndpoint"], metadata["account"])
                body = await asyncio.to_thread(
                    lambda: urllib.request.urlopen(url, timeout=5).read()
                )
                return keda_lag(json.loads(body), metadata)

            assert await lag() == 0
            for version in range(1, 8):
                event = events_pb2.ScriptUploaded(project="keda", version=version)
                await js.publish(
                    messaging.uploaded_subject("keda"),
                    messaging.encode(event),
                    headers={"Nats-Msg-Id": messaging.uploaded_msg_id("keda", version)},
                )
            assert await lag() == 7
            # a worker takes two jobs and is still running them: still counted
            pull = await js.pull_subscribe_bind(
                durable=metadata["consumer"], stream=metadata["stream"]
            )
            running = await pull.fetch(2, timeout=5)
            assert await lag() == 7
            for message in running:
                await message.ack()
            await nc.flush()
            assert await lag() == 5
        finally:
            await nc.close()
    # what that asks of the base's bounds (2 to 10 workers, two jobs each)
    production = _component_on(BASE)
    assert [desired_workers(n, production) for n in (0, 5, 7, 40)] == [2, 3, 4, 10]


def test_the_component_and_the_overlay_are_documented() -> None:
    text = OPERATIONS_DOC.read_text()
    for needle in ("components/keda-worker", "overlays/dev-keda", "lagThreshold", "$G"):
        assert needle in text, needle
