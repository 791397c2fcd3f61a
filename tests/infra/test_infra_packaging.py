"""azd service definition, deployed package contents, host.json, the checkov set-up and the guide."""

from __future__ import annotations

import json
import os
import re
from fnmatch import fnmatchcase
from pathlib import Path

import pytest
import yaml

from tests.infra.infra_bicep_model import Templates

KEPT = [
    "function_app.py",
    "host.json",
    "requirements.txt",
    "o365ingest/__init__.py",
    "o365ingest/settings.py",
]
EXCLUDED = [
    "tests/__init__.py",
    "scripts/run_local.py",
    "package.json",
    "package-lock.json",
    "azure.yaml",
    "tests/infra/test_infra_settings.py",
    "m365sim/config.py",
    "bench/__main__.py",
    "docs/deploy.md",
    "infra/main.bicep",
    "infra/app/rbac.bicep",
    ".venv/lib/python3.11/site-packages/msal/__init__.py",
    ".venv-checkov/bin/checkov",
    "o365ingest/__pycache__/settings.cpython-311.pyc",
    "__pycache__/function_app.cpython-311.pyc",
    "node_modules/azurite/package.json",
    ".state/checkpoints.json",
    "output/audit.jsonl",
    ".sim/ca.pem",
    ".run/sim.pid",
    ".azure/dev/.env",
    ".git/config",
    ".ci/run",
    ".pytest_cache/v/cache/nodeids",
    "Makefile",
    "README.md",
    "pyproject.toml",
    "requirements-dev.txt",
    "local.settings.json",
    "local.settings.json.example",
    ".env",
    "app-cert.pem",
]


def read_funcignore(repo: Path) -> list[str]:
    lines = (repo / ".funcignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


def is_ignored(path: str, patterns: list[str]) -> bool:
    """gitignore matching, as far as .funcignore uses it (azd reads .funcignore this way)."""
    parts = path.split("/")
    ignored = False
    for raw in patterns:
        negate = raw.startswith("!")
        pattern = raw[1:] if negate else raw
        dir_only = pattern.endswith("/")
        pattern = pattern.rstrip("/")
        anchored = "/" in pattern
        pattern = pattern.lstrip("/")
        matched = False
        for end in range(1, len(parts) + 1):
            if dir_only and end == len(parts):
                continue  # the last part is a file
            if not anchored:
                matched |= fnmatchcase(parts[end - 1], pattern)
            elif pattern.startswith("**/"):
                matched |= any(fnmatchcase("/".join(parts[start:end]), pattern[3:]) for start in range(end))
            else:
                matched |= fnmatchcase("/".join(parts[:end]), pattern)
        if matched:
            ignored = not negate
    return ignored


def test_matcher_follows_gitignore_rules() -> None:
    assert is_ignored("a/b/__pycache__/x.pyc", ["**/__pycache__"])
    assert is_ignored("docs/x.md", ["docs/"])
    assert not is_ignored("docs", ["docs/"])
    assert not is_ignored("o365ingest/docs.py", ["docs/"])
    assert not is_ignored("keep.md", ["*.md", "!keep.md"])


def test_azure_yaml_defines_one_python_function_service(repo: Path, templates: Templates) -> None:
    doc = yaml.safe_load((repo / "azure.yaml").read_text())
    assert doc["name"]
    assert set(doc["services"]) == {"api"}
    api = doc["services"]["api"]
    assert api["host"] == "function"
    assert api["language"] == "python"
    project = (repo / api["project"]).resolve()
    assert project == repo, "the service is the repository root; .funcignore trims the package"
    for name in ("requirements.txt", "host.json", ".funcignore"):
        assert (project / name).is_file(), f"{name} missing in the service project"
    infra = doc.get("infra", {})
    assert (repo / infra.get("path", "infra") / f"{infra.get('module', 'main')}.bicep").is_file()
    # azd finds the app by this tag; it must name the service above.
    functionapp = templates["infra/app/functionapp.bicep"]
    assert functionapp.param_default("serviceName") == "api"
    assert templates.main.module_body("functionApp")["params"].get("serviceName", "api") == "api"


@pytest.mark.parametrize("path", EXCLUDED)
def test_funcignore_keeps_everything_but_the_app_out(repo: Path, path: str) -> None:
    assert is_ignored(path, read_funcignore(repo)), f"{path} would be deployed"


@pytest.mark.parametrize("path", KEPT)
def test_funcignore_keeps_the_app(repo: Path, path: str) -> None:
    assert not is_ignored(path, read_funcignore(repo)), f"{path} would be left out of the package"


def test_only_the_app_would_be_deployed_from_this_checkout(repo: Path) -> None:
    """Walk the working tree as azd would: a new top-level file or folder must be listed in .funcignore."""
    patterns = read_funcignore(repo)
    app_files = {"function_app.py", "host.json", "requirements.txt", ".funcignore"}
    deployed_extra = []
    for folder, dirs, files in os.walk(repo):
        rel_dir = Path(folder).relative_to(repo).as_posix()
        prefix = "" if rel_dir == "." else f"{rel_dir}/"
        dirs[:] = [d for d in dirs if d != ".git" and not is_ignored(f"{prefix}{d}/probe", patterns)]
        for name in files:
            path = f"{prefix}{name}"
            if not is_ignored(path, patterns) and path not in app_files and not path.startswith("o365ingest/"):
                deployed_extra.append(path)
    assert not deployed_extra, f"not part of the app but would be deployed (add to .funcignore): {deployed_extra}"


def test_host_json_matches_the_recommended_baseline(repo: Path) -> None:
    host = json.loads((repo / "host.json").read_text())
    assert host["version"] == "2.0"
    assert host["extensionBundle"] == {"id": "Microsoft.Azure.Functions.ExtensionBundle", "version": "[4.*, 5.0.0)"}
    assert host["functionTimeout"] == "00:10:00"
    sampling = host["logging"]["applicationInsights"]["samplingSettings"]
    assert sampling["isEnabled"] is True
    assert set(sampling["excludedTypes"].split(";")) == {"Request", "Exception"}
    assert host["logging"]["logLevel"]["Function"] == "Information"


def test_every_checkov_skip_is_justified_inside_its_resource(repo: Path) -> None:
    skips = 0
    for path in sorted((repo / "infra").rglob("*.bicep")):
        lines = path.read_text().splitlines()
        for number, line in enumerate(lines):
            if "checkov:skip" not in line:
                continue
            skips += 1
            match = re.fullmatch(r"\s*//checkov:skip=(CKV2?_AZURE_\d+):(.+)", line)
            assert match, f"{path.name}:{number + 1}: expected //checkov:skip=CKV_AZURE_n:reason"
            assert len(match.group(2).split()) >= 8, f"{path.name}:{number + 1}: give the reason"
            opener = next(lines[i] for i in range(number, -1, -1) if not lines[i].lstrip().startswith("//"))
            assert re.match(r"resource \w+ '[^']+' = \{$", opener), \
                f"{path.name}:{number + 1}: put the skip at the top of the resource it applies to"
    assert skips, "expected the justified skips"


def test_infra_check_target_is_scripted(repo: Path) -> None:
    makefile = (repo / "infra/infra.mk").read_text()
    assert re.search(r"^infra-check:", makefile, re.M)
    assert re.search(r"CHECKOV_VERSION \?= 3\.3\.\d+", makefile)
    assert "-m venv" in makefile and "touch $@" in makefile, "installs once, then a stamp file"
    assert "--framework bicep" in makefile
    assert "checkov_summary.py" in makefile, "parsing errors must fail the target"


GUIDE_STEPS = [
    "## 1. Prerequisites",
    "## 2. Provision",
    "## 3. Create the certificate",
    "## 4. Register the app",
    "## 5. Set the client ID",
    "## 6. Deploy",
    "## 7. Confirm events",
    "## 8. Run a function by hand",
    "## 9. Tear down",
]


def test_deploy_guide_is_in_the_order_a_new_user_needs(repo: Path) -> None:
    guide = (repo / "docs/deploy.md").read_text()
    positions = [guide.find(step) for step in GUIDE_STEPS]
    assert all(p >= 0 for p in positions), [s for s, p in zip(GUIDE_STEPS, positions, strict=True) if p < 0]
    assert positions == sorted(positions), "steps out of order"
    for text in ("azd provision", "azd deploy", "azd down --purge", "application/x-pem-file",
                 "--encoding DER", "8bd644d1-64a1-4d4b-ae52-2e0cbf64e373", "/admin/functions/audit_timer",
                 "messagetrace_timer", "x-functions-key", "GCC High", "DoD", "azd env set O365_CLIENT_ID"):
        assert text in guide, f"docs/deploy.md does not mention {text!r}"


def test_deploy_guide_explains_every_permission_and_role(repo: Path) -> None:
    guide = (repo / "docs/deploy.md").read_text()
    for name in ("ActivityFeed.Read", "ActivityFeed.ReadDlp", "ExchangeMessageTrace.Read.All",
                 "Azure Event Hubs Data Sender", "Storage Blob Data Owner", "Storage Blob Data Contributor",
                 "Key Vault Secrets User", "Key Vault Certificates Officer", "Monitoring Metrics Publisher",
                 "Role Based Access Control Administrator"):
        rows = [line.split("|") for line in guide.splitlines() if line.startswith("|")]
        rows = [cells for cells in rows if len(cells) == 6 and name in cells[1]]
        assert rows, f"docs/deploy.md: the permissions table has no row for {name}"
        assert len(rows[0][4].split()) >= 6, f"docs/deploy.md: say why {name} is needed"
