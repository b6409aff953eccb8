"""deploy/docker, read without a Docker engine: each image is built from files that exist and
pass its ignore file, generates the protobuf code itself, installs locked dependencies, starts
its own service, and runs as the user and on the ports its Deployment expects."""

from __future__ import annotations

import json
import pathlib
import re
import shlex
import tomllib
from dataclasses import dataclass, field

import pytest
from k8s_manifests import BASE, ROOT, SERVICES, container, container_ports, named

DOCKER = ROOT / "deploy" / "docker"
PYTHON_SERVICES = ["scripts", "watcher", "gateway", "generator"]


@dataclass
class Stage:
    base: str
    name: str = ""
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, instruction: str) -> list[str]:
        return [args for op, args in self.instructions if op == instruction]


def parse_dockerfile(path: pathlib.Path) -> list[Stage]:
    """Stages with their instructions; continuation lines joined, comments dropped, ARG
    defaults declared before the first FROM substituted into FROM lines."""
    text = re.sub(r"\\\n", " ", path.read_text())
    lines = [line.strip() for line in text.splitlines()]
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in lines:
        if not line or line.startswith("#"):
            continue
        op, _, rest = line.partition(" ")
        op, rest = op.upper(), rest.strip()
        if op == "ARG" and not stages:
            name, _, default = rest.partition("=")
            args[name] = default
        elif op == "FROM":
            words = rest.split()
            base = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], words[0])
            name = words[2] if len(words) > 2 and words[1].upper() == "AS" else ""
            stages.append(Stage(base, name))
        else:
            stages[-1].instructions.append((op, rest))
    return stages


def exec_form(args: str) -> list[str]:
    return json.loads(args) if args.startswith("[") else shlex.split(args)


def copy_sources(stage: Stage) -> list[str]:
    """Sources of COPY instructions that read the build context (not another stage)."""
    sources = []
    for args in stage.all("COPY"):
        words = shlex.split(args)
        if any(w.startswith("--from") for w in words):
            continue
        operands = [w for w in words if not w.startswith("--")]
        sources.extend(operands[:-1])
    return sources


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    pattern = pattern.strip().strip("/")
    regex = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            regex, i = regex + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            regex, i = regex + ".*", i + 2
        elif pattern[i] == "*":
            regex, i = regex + "[^/]*", i + 1
        elif pattern[i] == "?":
            regex, i = regex + "[^/]", i + 1
        else:
            regex, i = regex + re.escape(pattern[i]), i + 1
    return re.compile(regex + r"\Z")


def ignored(path: str, ignore_file: pathlib.Path) -> bool:
    """Docker's rule: the last matching pattern wins; a pattern matching a directory matches
    everything in it."""
    parts = pathlib.PurePosixPath(path.strip("/")).parts
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for line in ignore_file.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        regex = _pattern_regex(line.lstrip("!"))
        if any(regex.match(candidate) for candidate in candidates):
            excluded = not negated
    return excluded


def dockerfile(service: str) -> pathlib.Path:
    return DOCKER / f"{service}.Dockerfile"


def test_there_is_one_dockerfile_per_service() -> None:
    assert sorted(p.name for p in DOCKER.glob("*.Dockerfile")) == sorted(
        f"{s}.Dockerfile" for s in SERVICES
    )


def test_the_ignore_matcher_follows_dockers_rules(tmp_path: pathlib.Path) -> None:
    ignore = tmp_path / "x.dockerignore"
    ignore.write_text("**\n!cadpipe/\ncadpipe/v1/\n**/__pycache__/\n")
    assert ignored(".venv/bin/python", ignore)
    assert not ignored("cadpipe/settings.py", ignore)
    assert ignored("cadpipe/v1/scripts_pb2.py", ignore)
    assert ignored("cadpipe/adapters/__pycache__/s3.cpython-311.pyc", ignore)


@pytest.mark.parametrize("service", SERVICES)
def test_every_copied_file_exists_and_reaches_the_build(service: str) -> None:
    ignore_file = DOCKER / f"{service}.Dockerfile.dockerignore"
    sources = [s for stage in parse_dockerfile(dockerfile(service)) for s in copy_sources(stage)]
    assert sources
    for source in sources:
        path = ROOT / source
        assert path.exists(), f"{service}: COPY {source}: no such file"
        files = [p for p in path.rglob("*") if p.is_file()] if path.is_dir() else [path]
        sent = [f for f in files if not ignored(str(f.relative_to(ROOT)), ignore_file)]
        assert sent, f"{service}: the ignore file keeps {source} out of the build context"


@pytest.mark.parametrize("service", SERVICES)
def test_protobuf_code_is_generated_in_the_build_not_copied(service: str) -> None:
    ignore_file = DOCKER / f"{service}.Dockerfile.dockerignore"
    assert ignored("cadpipe/v1/scripts_pb2.py", ignore_file)
    assert ignored(".venv/lib/python3.11/site-packages/x.py", ignore_file)
    build = parse_dockerfile(dockerfile(service))[0]
    runs = " ".join(build.all("RUN"))
    assert "scripts/gen_protos.py" in runs
    assert "protos/" in copy_sources(build)


@pytest.mark.parametrize("service", SERVICES)
def test_dependencies_are_installed_at_their_locked_versions(service: str) -> None:
    for stage in parse_dockerfile(dockerfile(service)):
        for run in stage.all("RUN"):
            for command in run.split("&&"):
                if "pip install" in command and "--no-deps" not in command:
                    assert "-c requirements.lock" in command, command


def test_every_runtime_dependency_is_in_the_lock() -> None:
    """The images install pyproject's dependencies constrained by the lock; one missing from
    the lock would be installed at whatever version is newest that day."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]

    def canonical(name: str) -> str:
        return re.sub(r"[-_.]+", "-", name).lower()

    locked = {
        canonical(line.split("==")[0])
        for line in (ROOT / "requirements.lock").read_text().splitlines()
        if "==" in line
    }
    for requirement in project["dependencies"]:
        name = canonical(re.split(r"[<>=!~\[; ]", requirement, maxsplit=1)[0])
        assert name in locked, f"{name} is not pinned in requirements.lock (make lock)"


@pytest.mark.parametrize("service", SERVICES)
def test_the_image_starts_its_own_service(service: str) -> None:
    final = parse_dockerfile(dockerfile(service))[-1]
    (entrypoint,) = final.all("ENTRYPOINT")
    command = exec_form(entrypoint) + [w for c in final.all("CMD") for w in exec_form(c)]
    assert command[-2:] == ["-m", f"services.{service}"]
    assert (ROOT / "services" / service / "__main__.py").is_file()


@pytest.mark.parametrize("service", SERVICES)
def test_the_image_runs_as_the_user_and_ports_its_deployment_expects(service: str) -> None:
    final = parse_dockerfile(dockerfile(service))[-1]
    deployment = named(BASE, "Deployment", service)
    pod = deployment["spec"]["template"]["spec"]["securityContext"]
    user = final.all("USER")[-1]
    assert user == f"{pod['runAsUser']}:{pod['runAsGroup']}"
    exposed = {int(p) for args in final.all("EXPOSE") for p in args.split()}
    assert exposed == set(container_ports(deployment).values())
    assert container(deployment)["image"].startswith(f"cadpipe/{service}:")


@pytest.mark.parametrize("service", PYTHON_SERVICES)
def test_python_services_run_on_slim_python_as_a_numeric_non_root_user(service: str) -> None:
    stages = parse_dockerfile(dockerfile(service))
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    for stage in stages:
        assert stage.base.startswith("python:3.11-slim"), stage.base
    assert requires.startswith(">=3.11")
    uid = stages[-1].all("USER")[-1].split(":")[0]
    assert uid.isdigit() and int(uid) > 0


def test_the_worker_image_has_debians_freecad_and_a_reaper() -> None:
    stages = parse_dockerfile(dockerfile("worker"))
    assert all(stage.base == "debian:bookworm-slim" for stage in stages)
    final = stages[-1]
    installs = " ".join(final.all("RUN"))
    assert re.search(r"apt-get install [^&]*\bfreecad\b", installs)
    assert re.search(r"apt-get install [^&]*\bpython3\b", installs)
    # the venv is made by Debian's python3, the interpreter FreeCAD's modules are built for
    assert "python3 -m venv /opt/cadpipe" in " ".join(stages[0].all("RUN"))
    (entrypoint,) = final.all("ENTRYPOINT")
    assert exec_form(entrypoint)[:2] == ["/usr/bin/tini", "--"]
