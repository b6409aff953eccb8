"""Kubernetes NetworkPolicy semantics for the subset deploy/k8s uses, to ask "may A connect to
B on port P?" of the rendered policies: a connection passes when no policy isolates the sender
for egress or one of those allows it, and likewise for the receiver's ingress."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from k8s_manifests import selector_matches
from k8s_render import Obj


@dataclass(frozen=True)
class Endpoint:
    name: str
    namespace: str | None  # None: an address outside the cluster
    labels: Mapping[str, str] = field(default_factory=dict)
    ports: Mapping[str, int] = field(default_factory=dict)  # named container ports


@dataclass(frozen=True)
class Cluster:
    policies: list[Obj]
    namespace_labels: Mapping[str, Mapping[str, str]]

    def allows(self, src: Endpoint, dst: Endpoint, port: int, protocol: str = "TCP") -> bool:
        return self._direction_allows("Egress", src, src, dst, port, protocol) and (
            self._direction_allows("Ingress", dst, src, dst, port, protocol)
        )

    def _direction_allows(
        self, kind: str, pod: Endpoint, src: Endpoint, dst: Endpoint, port: int, protocol: str
    ) -> bool:
        if pod.namespace is None:
            return True  # outside the cluster: no policy applies
        isolating = [p for p in self.policies if _isolates(p, pod, kind)]
        if not isolating:
            return True
        peer = dst if kind == "Egress" else src
        rules_key, peers_key = ("egress", "to") if kind == "Egress" else ("ingress", "from")
        return any(
            self._rule_allows(
                rule, peers_key, policy["metadata"]["namespace"], peer, dst, port, protocol
            )
            for policy in isolating
            for rule in policy["spec"].get(rules_key, [])
        )

    def _rule_allows(
        self,
        rule: Obj,
        peers_key: str,
        policy_namespace: str,
        peer: Endpoint,
        dst: Endpoint,
        port: int,
        protocol: str,
    ) -> bool:
        peers = rule.get(peers_key)
        if peers and not any(self._peer_matches(p, policy_namespace, peer) for p in peers):
            return False
        ports = rule.get("ports")
        return not ports or any(_port_matches(p, dst, port, protocol) for p in ports)

    def _peer_matches(self, spec: Obj, policy_namespace: str, peer: Endpoint) -> bool:
        if "ipBlock" in spec:
            # used here only for addresses outside the cluster
            return peer.namespace is None
        if peer.namespace is None:
            return False
        namespace_selector = spec.get("namespaceSelector")
        if namespace_selector is None:
            in_namespace = peer.namespace == policy_namespace
        else:
            labels = self.namespace_labels.get(peer.namespace, {})
            in_namespace = selector_matches(namespace_selector, dict(labels))
        pod_selector = spec.get("podSelector")
        return in_namespace and (
            pod_selector is None or selector_matches(pod_selector, dict(peer.labels))
        )


def _isolates(policy: Obj, pod: Endpoint, kind: str) -> bool:
    spec = policy["spec"]
    types = spec.get("policyTypes") or ["Ingress", *(["Egress"] if "egress" in spec else [])]
    return (
        kind in types
        and policy["metadata"].get("namespace") == pod.namespace
        and selector_matches(spec.get("podSelector", {}), dict(pod.labels))
    )


def _port_matches(spec: Obj, dst: Endpoint, port: int, protocol: str) -> bool:
    if spec.get("protocol", "TCP") != protocol:
        return False
    wanted: int | str | None = spec.get("port")
    if wanted is None:
        return True
    if isinstance(wanted, str):
        # a named port means the destination pod's port of that name
        return dst.ports.get(wanted) == port
    last = int(spec.get("endPort", wanted))
    return int(wanted) <= port <= last
