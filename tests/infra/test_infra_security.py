"""Security properties of the Bicep templates, read from the parsed templates (pycep).

Each test names the property the issue asks for; the assertion messages say which file breaks it.
"""

from __future__ import annotations

import json
import re

import pytest

from tests.infra.infra_bicep_model import INFRA, Evaluator, Template, Templates, accessor_path, render, unwrap

EXPECTED_FILES = {
    "infra/main.bicep",
    "infra/app/identity.bicep",
    "infra/app/storage.bicep",
    "infra/app/eventhubs.bicep",
    "infra/app/keyvault.bicep",
    "infra/app/monitoring.bicep",
    "infra/app/functionapp.bicep",
    "infra/app/rbac.bicep",
    "infra/app/network.bicep",
}

# Role definition IDs from shared/reference/azure-platform.md, section 3.1.
ROLES = {
    "2b629674-e913-4c01-ae53-ef4638d8f975": "Azure Event Hubs Data Sender",
    "b7e6dc6d-f1e8-4753-8033-0f276bb0955b": "Storage Blob Data Owner",
    "ba92f5b4-2d11-453d-a403-e96b0029c9fe": "Storage Blob Data Contributor",
    "4633458b-17de-408a-b874-0445c86b69e6": "Key Vault Secrets User",
    "a4417e6f-fecd-4de8-b567-7b0420556985": "Key Vault Certificates Officer",
    "3913510d-42f4-4e42-8a64-420c390055eb": "Monitoring Metrics Publisher",
}
# The one resource type each role may be assigned on.
ROLE_SCOPE_TYPES = {
    "Azure Event Hubs Data Sender": "Microsoft.EventHub/namespaces/eventhubs",
    "Storage Blob Data Owner": "Microsoft.Storage/storageAccounts",
    "Storage Blob Data Contributor": "Microsoft.Storage/storageAccounts/blobServices/containers",
    "Key Vault Secrets User": "Microsoft.KeyVault/vaults",
    "Key Vault Certificates Officer": "Microsoft.KeyVault/vaults",
    "Monitoring Metrics Publisher": "Microsoft.Insights/components",
}
ROLE_ASSIGNMENT = "Microsoft.Authorization/roleAssignments"
SECRET_PATTERNS = re.compile(
    r"(?i)\blist(keys|connectionstrings|accountsas|servicesas|secrets|credentials)\b|list_func|"
    r"AccountKey=|SharedAccessKey|DefaultEndpointsProtocol|getSecret"
)


def test_every_bicep_file_parses_with_pycep(templates: Templates) -> None:
    found = {tpl.rel for tpl in templates}
    assert found >= EXPECTED_FILES, f"missing templates: {sorted(EXPECTED_FILES - found)}"
    for tpl in templates:
        assert tpl.data.get("resources") or tpl.data.get("modules"), f"{tpl.rel}: parsed to nothing"


def test_no_unsupported_syntax_for_offline_checks() -> None:
    # pycep and checkov cannot follow safe dereference or lambdas, and registry modules need network.
    for path in INFRA.rglob("*.bicep"):
        code = "\n".join(line.split("//")[0] for line in path.read_text().splitlines())
        assert ".?" not in code, f"{path.name}: safe-dereference operator '.?'"
        assert "=>" not in code, f"{path.name}: lambda expression"
        assert "br/public:" not in code and "br:" not in code, f"{path.name}: registry module"


def test_storage_account_is_identity_only_and_private(templates: Templates) -> None:
    tpl = templates["infra/app/storage.bicep"]
    props = tpl.only("Microsoft.Storage/storageAccounts")["properties"]
    assert props["allowSharedKeyAccess"] is False
    assert props["allowBlobPublicAccess"] is False
    assert props["minimumTlsVersion"] == "TLS1_2"
    assert props["supportsHttpsTrafficOnly"] is True
    assert props["allowCrossTenantReplication"] is False
    for body in tpl.resources_of("Microsoft.Storage/storageAccounts/blobServices/containers").values():
        assert body["properties"]["publicAccess"] == "None"


def test_storage_has_deployment_checkpoint_and_deadletter_containers(templates: Templates) -> None:
    main = templates.main
    params = main.module_body("storage")["params"]
    ev = Evaluator(main)
    names = {ev.eval(params[p]) for p in ("deploymentContainerName", "checkpointContainerName",
                                           "deadLetterContainerName")}
    assert names == {"app-package", "checkpoints", "deadletter"}
    loop_source = templates["infra/app/storage.bicep"].variables["containerNames"]["value"]
    assert set(loop_source) == {"deploymentContainerName", "checkpointContainerName", "deadLetterContainerName"}


def test_event_hubs_namespace_is_standard_without_local_auth(templates: Templates) -> None:
    tpl = templates["infra/app/eventhubs.bicep"]
    ns = tpl.only("Microsoft.EventHub/namespaces")
    assert ns["sku"]["name"] == "Standard" and ns["sku"]["tier"] == "Standard"
    assert ns["properties"]["disableLocalAuth"] is True
    assert ns["properties"]["minimumTlsVersion"] == "1.2"
    hub = tpl.only("Microsoft.EventHub/namespaces/eventhubs")["properties"]
    assert hub["partitionCount"] == "partitionCount" and hub["messageRetentionInDays"] == "messageRetentionInDays"
    main_params = templates.main.module_body("eventHubs")["params"]
    assert main_params["partitionCount"] == "eventHubPartitionCount"
    assert main_params["messageRetentionInDays"] == "eventHubRetentionDays"


def test_no_sas_rules_keys_or_secrets_anywhere(templates: Templates) -> None:
    for tpl in templates:
        for symbol, res in tpl.resources.items():
            rtype = res["type"].lower()
            assert "authorizationrules" not in rtype, f"{tpl.rel}: {symbol} creates a SAS rule"
            assert not rtype.startswith("microsoft.keyvault/vaults/"), \
                f"{tpl.rel}: {symbol} creates key material in Key Vault ({res['type']})"
        for name in tpl.params:
            kinds = {d["type"] for d in tpl.params[name].get("decorators", [])}
            assert "secure" not in kinds, f"{tpl.rel}: @secure() parameter {name}: the templates take no secret"
        text = json.dumps(tpl.data)
        assert not SECRET_PATTERNS.search(text), f"{tpl.rel}: {SECRET_PATTERNS.search(text).group(0)}"


def test_key_vault_uses_rbac_and_purge_protection(templates: Templates) -> None:
    props = templates["infra/app/keyvault.bicep"].only("Microsoft.KeyVault/vaults")["properties"]
    assert props["enableRbacAuthorization"] is True
    assert props["enablePurgeProtection"] is True
    assert props["enableSoftDelete"] is True
    assert not props.get("accessPolicies"), "RBAC vault: no access policies"
    assert props["enabledForTemplateDeployment"] is False


def test_monitoring_has_local_auth_off(templates: Templates) -> None:
    tpl = templates["infra/app/monitoring.bicep"]
    appi = tpl.only("Microsoft.Insights/components")["properties"]
    assert appi["DisableLocalAuth"] is True
    assert render(appi["WorkspaceResourceId"], tpl) == "workspace.id"
    workspace = tpl.only("Microsoft.OperationalInsights/workspaces")["properties"]
    assert workspace["features"]["disableLocalAuth"] is True
    assert "actionGroupId" in tpl.params, "monitoring.bicep is the module boundary for alert rules"


def test_function_app_is_flex_consumption_python_311(templates: Templates) -> None:
    tpl = templates["infra/app/functionapp.bicep"]
    plan = tpl.only("Microsoft.Web/serverfarms")
    assert plan["sku"] == {"tier": "FlexConsumption", "name": "FC1"}
    assert plan["properties"]["reserved"] is True
    site = tpl.only("Microsoft.Web/sites")
    assert site["kind"] == "functionapp,linux"
    props = site["properties"]
    assert props["httpsOnly"] is True
    assert props["siteConfig"]["minTlsVersion"] == "1.2"
    assert props["siteConfig"]["ftpsState"] == "Disabled"
    config = props["functionAppConfig"]
    ev = Evaluator(tpl)
    assert ev.eval(config["runtime"]["name"]) == "python"
    assert ev.eval(config["runtime"]["version"]) == "3.11"
    assert tpl.decorator("pythonVersion", "allowed") == ["3.11"]
    scale = config["scaleAndConcurrency"]
    assert scale == {"instanceMemoryMB": "instanceMemoryMB", "maximumInstanceCount": "maximumInstanceCount"}
    main_params = templates.main.module_body("functionApp")["params"]
    assert main_params["instanceMemoryMB"] == "instanceMemoryMB"
    assert main_params["maximumInstanceCount"] == "maximumInstanceCount"
    assert templates.main.decorator("instanceMemoryMB", "allowed") == [512, 2048, 4096]


def test_function_app_uses_its_identity_for_storage_and_deployment(templates: Templates) -> None:
    tpl = templates["infra/app/functionapp.bicep"]
    site = tpl.only("Microsoft.Web/sites")
    assert site["identity"]["type"] == "UserAssigned"
    assert list(site["identity"]["userAssignedIdentities"]) == ["'${identityId}'"]
    storage = site["properties"]["functionAppConfig"]["deployment"]["storage"]
    assert storage["type"] == "blobContainer"
    assert storage["authentication"] == {"type": "UserAssignedIdentity",
                                         "userAssignedIdentityResourceId": "identityId"}
    policies = tpl.resources_of("Microsoft.Web/sites/basicPublishingCredentialsPolicies")
    assert {b["name"]: b["properties"]["allow"] for b in policies.values()} == {"ftp": False, "scm": False}


def test_names_are_unique_per_subscription_environment_and_region(templates: Templates) -> None:
    main = templates.main
    token = render(main.variables["resourceToken"]["value"], main)
    assert token == "toLower(uniqueString(subscription().id, environmentName, location))"
    name_params = {"name", "planName", "logAnalyticsName", "appInsightsName"}
    checked = 0
    for symbol in main.modules:
        for key, value in main.module_body(symbol).get("params", {}).items():
            if key in name_params and ".outputs." not in render(value, main):
                text = main.variables[value]["value"] if isinstance(value, str) and value in main.variables else value
                assert isinstance(text, str) and "${resourceToken}" in text, \
                    f"main.bicep module {symbol}: {key} = {text!r} is not unique per environment"
                checked += 1
    assert checked >= 8, "every named resource takes its name from resourceToken"


def _role_guid(tpl: Template, expr) -> str:
    path = accessor_path(expr)
    assert len(path) == 2 and path[0] in tpl.variables, f"{tpl.rel}: role {expr!r} is not roles.<name>"
    return tpl.variables[path[0]]["value"][path[1]]


def _scope_symbol(expr) -> str:
    if isinstance(expr, str):
        return expr
    if isinstance(expr, dict) and expr.get("operator", {}).get("type") == "index_accessor":
        return expr["operator"]["operands"]["operand_1"]
    raise AssertionError(f"scope {expr!r} is not a resource symbol")


def _role_assignments(templates: Templates):
    for tpl in templates:
        for symbol, body in tpl.resources_of(ROLE_ASSIGNMENT).items():
            yield tpl, symbol, body


def test_role_assignments_are_scoped_to_single_resources_with_guid_names(templates: Templates) -> None:
    assignments = list(_role_assignments(templates))
    assert len(assignments) >= 9, "expected the app's and the deployer's role assignments"
    for tpl, symbol, body in assignments:
        where = f"{tpl.rel}: {symbol}"
        assert "scope" in body, f"{where} has no scope, so it would apply to the whole resource group"
        scope = _scope_symbol(body["scope"])
        assert scope in tpl.resources, f"{where}: scope {scope!r} is not a resource of the file"
        scope_type = tpl.resources[scope]["type"]
        assert scope_type.lower() not in {"microsoft.resources/resourcegroups", "microsoft.resources/subscriptions"}
        props = body["properties"]
        role_def = props["roleDefinitionId"]["function"]
        assert role_def["type"] == "subscription_resource_id"
        assert role_def["parameters"]["resource_type"] == "Microsoft.Authorization/roleDefinitions"
        role = _role_guid(tpl, role_def["parameters"]["resource_name_1"])
        assert role in ROLES, f"{where}: role {role} is not one of the allowed roles"
        assert scope_type == ROLE_SCOPE_TYPES[ROLES[role]], \
            f"{where}: {ROLES[role]} assigned on {scope_type}, expected {ROLE_SCOPE_TYPES[ROLES[role]]}"
        loop_vars = frozenset({"i"})
        scope_text = render(body["scope"], tpl, loop_vars)
        role_text = render(role_def["parameters"]["resource_name_1"], tpl)
        principal_text = render(props["principalId"], tpl)
        expected = f"guid({scope_text}.id, {principal_text}, {role_text})"
        assert render(body["name"], tpl, loop_vars) == expected, f"{where}: name is not {expected}"


def test_no_role_assignment_at_subscription_or_group_scope(templates: Templates) -> None:
    assert not templates.main.resources_of(ROLE_ASSIGNMENT), "main.bicep (subscription scope) assigns roles"
    for tpl in templates:
        text = json.dumps(tpl.resources_of(ROLE_ASSIGNMENT))
        assert '"resource_group"' not in text and '"type": "subscription"' not in text, tpl.rel


def test_app_identity_gets_exactly_the_roles_it_needs(templates: Templates) -> None:
    granted = {}
    for tpl, symbol, body in _role_assignments(templates):
        if body["properties"]["principalId"] == "appPrincipalId":
            assert body["properties"]["principalType"] == "ServicePrincipal", symbol
            role = _role_guid(tpl, body["properties"]["roleDefinitionId"]["function"]["parameters"]["resource_name_1"])
            granted[ROLES[role]] = granted.get(ROLES[role], 0) + 1
    assert set(granted) == {"Azure Event Hubs Data Sender", "Storage Blob Data Owner", "Storage Blob Data Contributor",
                            "Key Vault Secrets User", "Monitoring Metrics Publisher"}, granted
    rbac = templates.main.module_body("rbac")["params"]
    assert render(rbac["appPrincipalId"], templates.main) == "identity.outputs.principalId"


def test_deployer_roles_are_optional(templates: Templates) -> None:
    rbac = templates["infra/app/rbac.bicep"]
    assert rbac.param_default("deployerPrincipalId") == ""
    assert templates.main.param_default("grantDeployerDataAccess") is False
    for symbol, res in rbac.resources.items():
        if res["type"] == ROLE_ASSIGNMENT and symbol.startswith("deployer"):
            body, loop, condition = unwrap(res["config"])
            assert loop is not None or condition is not None, f"rbac.bicep: {symbol} is not conditional"
            assert body["properties"]["principalId"] == "deployerPrincipalId"


@pytest.mark.parametrize("flag", [False, True])
def test_network_isolation_is_an_off_by_default_parameter(templates: Templates, flag: bool) -> None:
    main = templates.main
    assert main.param_default("vnetEnabled") is False
    assert main.modules["network"]["config"]["condition"] == "vnetEnabled"
    ev = Evaluator(main, params={"vnetEnabled": flag})
    assert ev.eval("publicNetworkAccess") == ("Disabled" if flag else "Enabled")
    for symbol in ("storage", "eventHubs", "keyVault"):
        assert main.module_body(symbol)["params"]["publicNetworkAccess"] == "publicNetworkAccess", symbol
