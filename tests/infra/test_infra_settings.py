"""App settings: the templates set exactly the names o365ingest/settings.py reads, without secrets.

One list of names (``SETTINGS`` and ``PLATFORM_SETTINGS``) is checked both ways against the
Function App's app settings, against main.parameters.json (operators set each setting with
``azd env set <NAME>``), against the main.bicep outputs and against local.settings.json.example.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from o365ingest.settings import (
    CONTENT_TYPES,
    MESSAGETRACE_STREAM,
    PLATFORM_SETTINGS,
    SETTING_NAMES,
    SETTINGS,
    SPECS,
    load_settings,
)
from tests.infra.infra_bicep_model import Evaluator, Template, Templates, render

DEPLOYED = {s.name for s in SETTINGS if s.deployed}
LOCAL_ONLY = {s.name for s in SETTINGS if not s.deployed}
SECRET = {s.name for s in SETTINGS if s.secret}
# Deployed settings whose value the templates derive (from resources, host.json or the hosting
# model) instead of taking it from a parameter.
DERIVED = {
    "O365_CREDENTIAL",
    "O365_KEYVAULT_URL",
    "O365_SINK",
    "O365_EVENTHUB_NAMESPACE",
    "O365_EVENTHUB_NAME",
    "O365_EVENTHUB_HUBS",
    "O365_CHECKPOINT_STORE",
    "O365_STORAGE_ACCOUNT_URL",
    "O365_CHECKPOINT_CONTAINER",
    "O365_DEADLETTER_CONTAINER",
    "O365_FUNCTION_TIMEOUT_SECONDS",
}
AZD_VARIABLES = {"AZURE_ENV_NAME", "AZURE_LOCATION", "AZURE_PRINCIPAL_ID", "AZURE_PRINCIPAL_TYPE"}
SECRET_TEXT = re.compile(r"(?i)\blist[a-z]*\(|AccountKey=|SharedAccessKey|DefaultEndpointsProtocol|"
                         r"password|secret|getSecret")

TENANT = "3f2b8c1e-5a4d-4e6f-9b7a-1c2d3e4f5a6b"
FAKE_OUTPUTS = {
    "tenant": {"tenantId": TENANT},
    "keyVault": {"outputs": {"uri": "https://kv-abc.vault.azure.net/", "name": "kv-abc"}},
    "eventHubs": {"outputs": {"fullyQualifiedNamespace": "evhns-abc.servicebus.windows.net"}},
    "storage": {"outputs": {"blobEndpoint": "https://stabc.blob.core.windows.net/"}},
}


def camel(name: str) -> str:
    head, *rest = name.lower().split("_")
    return head + "".join(word.capitalize() for word in rest)


def object_entries(expr: Any, tpl: Template, templates: Templates) -> dict[str, tuple[Any, Template]]:
    """Resolve an object-valued expression (literal, union(), variable, module parameter) to
    its entries: name -> (value expression, template the expression belongs to)."""
    if isinstance(expr, str):
        if expr in tpl.variables:
            return object_entries(tpl.variables[expr]["value"], tpl, templates)
        if expr in tpl.params:
            caller, symbol = templates.caller(tpl)
            passed = caller.module_body(symbol)["params"]
            assert expr in passed, f"{caller.rel}: module {symbol} does not pass {expr}"
            return object_entries(passed[expr], caller, templates)
        raise AssertionError(f"{tpl.rel}: cannot resolve {expr!r} to an object")
    if isinstance(expr, dict) and "function" in expr:
        assert expr["function"]["type"] == "union", f"{tpl.rel}: unexpected {render(expr, tpl)}"
        entries: dict[str, tuple[Any, Template]] = {}
        for arg in expr["function"]["parameters"].values():
            if arg is not None:
                entries.update(object_entries(arg, tpl, templates))
        return entries
    assert isinstance(expr, dict) and "operator" not in expr, f"{tpl.rel}: {render(expr, tpl)} is not an object"
    return {key: (value, tpl) for key, value in expr.items()}


def app_settings(templates: Templates) -> dict[str, tuple[Any, Template]]:
    tpl = templates["infra/app/functionapp.bicep"]
    site = tpl.only("Microsoft.Web/sites")
    config = site["properties"]["siteConfig"]["appSettings"]
    assert config["loop_type"]["type"] == "array", "appSettings is a for-expression over items(...)"
    source = config["loop_type"]["detail"]["array_name"]
    assert source["function"]["type"] == "items"
    assert render(config["config"], tpl, frozenset({"setting"})) == "{name: setting.key, value: setting.value}"
    return object_entries(source["function"]["parameters"]["arg_1"], tpl, templates)


def evaluated_settings(templates: Templates, **params: Any) -> dict[str, str]:
    main = templates.main
    return Evaluator(main, params=params, symbols=FAKE_OUTPUTS).eval(main.variables["o365Settings"]["value"])


def test_app_settings_are_exactly_the_names_the_code_reads(templates: Templates) -> None:
    names = set(app_settings(templates))
    expected = DEPLOYED | set(PLATFORM_SETTINGS)
    missing, extra = sorted(expected - names), sorted(names - expected)
    assert not missing and not extra, (
        f"app settings differ from o365ingest/settings.py: set by no template: {missing}; "
        f"set but not read by the code: {extra}")


def test_no_local_only_or_secret_setting_is_deployed(templates: Templates) -> None:
    names = set(app_settings(templates))
    assert not names & LOCAL_ONLY, f"local-only settings deployed: {sorted(names & LOCAL_ONLY)}"
    assert not names & SECRET, f"secret settings deployed: {sorted(names & SECRET)}"
    for banned in ("AzureWebJobsStorage", "FUNCTIONS_WORKER_RUNTIME", "FUNCTIONS_EXTENSION_VERSION",
                   "WEBSITE_RUN_FROM_PACKAGE", "WEBSITE_CONTENTAZUREFILECONNECTIONSTRING"):
        assert banned not in names, f"{banned} is a connection string or not allowed on Flex Consumption"


def test_no_app_setting_value_is_or_reads_a_secret(templates: Templates) -> None:
    for name, (value, tpl) in app_settings(templates).items():
        text = render(value, tpl)
        assert not SECRET_TEXT.search(text), f"{name} = {text}"
        if isinstance(value, str) and value in tpl.params:
            kinds = {d["type"] for d in tpl.params[value].get("decorators", [])}
            assert "secure" not in kinds, f"{name} comes from a @secure() parameter"
        if "CONNECTION_STRING" in name:
            assert name == "APPLICATIONINSIGHTS_CONNECTION_STRING", f"{name}: no connection strings"


def test_platform_settings_use_the_managed_identity(templates: Templates) -> None:
    settings = {name: render(value, tpl) for name, (value, tpl) in app_settings(templates).items()}
    assert settings["AzureWebJobsStorage__credential"] == "'managedidentity'"
    for name in ("AZURE_CLIENT_ID", "AzureWebJobsStorage__clientId"):
        assert settings[name] == "identityClientId", name
    assert settings["APPLICATIONINSIGHTS_AUTHENTICATION_STRING"] == "'ClientId=${identityClientId};Authorization=AAD'"
    assert settings["AzureWebJobsStorage__blobServiceUri"] == "storageBlobEndpoint"
    # The identity has no queue or table role: given those endpoints the host would try to use them.
    assert not {"AzureWebJobsStorage__queueServiceUri", "AzureWebJobsStorage__tableServiceUri"} & set(settings)
    main = templates.main
    passed = main.module_body("functionApp")["params"]
    assert render(passed["identityClientId"], main) == "identity.outputs.clientId"
    assert render(passed["appInsightsConnectionString"], main) == "monitoring.outputs.connectionString"
    monitoring = templates["infra/app/monitoring.bicep"]
    # The connection string carries no usable key only because local authentication is off.
    assert render(monitoring.outputs["connectionString"]["value"], monitoring) == \
        "appInsights.properties.ConnectionString"
    assert monitoring.only("Microsoft.Insights/components")["properties"]["DisableLocalAuth"] is True


def test_parameters_file_maps_each_setting_by_its_own_name(templates: Templates, repo: Path) -> None:
    main = templates.main
    mapping = json.loads((repo / "infra/main.parameters.json").read_text())["parameters"]
    o365 = main.variables["o365Settings"]["value"]
    for name in sorted(DEPLOYED - DERIVED):
        param = camel(name)
        assert param in main.params, f"main.bicep has no parameter {param} for {name}"
        assert mapping.get(param) == {"value": f"${{{name}}}"}, f"main.parameters.json: {param} <- ${{{name}}}"
        default = SPECS[name].default or ""
        assert main.param_default(param) == default, f"{param} default {main.param_default(param)!r} != {default!r}"
        assert param in render(o365[name], main), f"o365Settings.{name} does not use parameter {param}"
    for name in DERIVED:
        assert f"${{{name}}}" not in json.dumps(mapping), f"{name} is derived from the resources, not set"


def test_parameters_file_and_template_agree(templates: Templates, repo: Path) -> None:
    main = templates.main
    mapping = json.loads((repo / "infra/main.parameters.json").read_text())["parameters"]
    assert set(mapping) == set(main.params), (
        f"not settable with azd env: {sorted(set(main.params) - set(mapping))}; "
        f"unknown to main.bicep: {sorted(set(mapping) - set(main.params))}")
    assert {p for p in main.params if main.param_default(p) is None} == {"environmentName", "location"}
    for param, entry in mapping.items():
        variables = re.findall(r"\$\{([A-Za-z0-9_]+)", entry["value"])
        assert len(variables) == 1, f"{param}: {entry['value']}"
        (variable,) = variables
        if variable.startswith("O365_"):
            assert variable in DEPLOYED, f"{param}: {variable} is not a deployed setting of o365ingest"
        elif variable.startswith("AZURE_"):
            assert variable in AZD_VARIABLES, f"{param}: {variable} is not set by azd"


def test_outputs_expose_the_local_values_under_setting_names(templates: Templates) -> None:
    main = templates.main
    outputs = main.outputs
    o365 = main.variables["o365Settings"]["value"]
    for name in ("O365_EVENTHUB_NAMESPACE", "O365_EVENTHUB_NAME", "O365_EVENTHUB_HUBS",
                 "O365_STORAGE_ACCOUNT_URL", "O365_CHECKPOINT_CONTAINER", "O365_DEADLETTER_CONTAINER",
                 "O365_KEYVAULT_URL"):
        assert name in outputs, f"main.bicep does not output {name}"
        assert render(outputs[name]["value"], main) == render(o365[name], main), f"{name} output != app setting"
    for name in outputs:
        assert not name.startswith("O365_") or name in DEPLOYED - SECRET, f"output {name} is not a setting"
        assert not SECRET_TEXT.search(name + render(outputs[name]["value"], main)), name
    assert render(outputs["AZURE_FUNCTION_IDENTITY_CLIENT_ID"]["value"], main) == "identity.outputs.clientId"
    assert render(outputs["SERVICE_API_NAME"]["value"], main) == "functionApp.outputs.name"


def test_function_timeout_matches_host_json_and_the_code_default(templates: Templates, repo: Path) -> None:
    host = json.loads((repo / "host.json").read_text())
    hours, minutes, seconds = (int(x) for x in host["functionTimeout"].split(":"))
    timeout = hours * 3600 + minutes * 60 + seconds
    assert timeout == 600 == int(SPECS["O365_FUNCTION_TIMEOUT_SECONDS"].default)
    main = templates.main
    assert render(main.variables["hostJson"]["value"], main) == "loadJsonContent('../host.json')"
    assert evaluated_settings(templates)["O365_FUNCTION_TIMEOUT_SECONDS"] == str(timeout)
    # The run budget leaves time to commit checkpoints before the host cancels the run.
    assert float(SPECS["O365_RUN_BUDGET_FRACTION"].default) * timeout < timeout - 60


def test_stream_list_matches_the_code(templates: Templates) -> None:
    main = templates.main
    assert main.variables["streams"]["value"] == [*CONTENT_TYPES, MESSAGETRACE_STREAM]
    assert main.variables["sharedHubName"]["value"] == SPECS["O365_EVENTHUB_NAME"].default
    assert main.decorator("hubLayout", "allowed") == ["shared", "perStream"]
    assert main.param_default("hubLayout") == "shared"


@pytest.mark.parametrize("layout", ["shared", "perStream"])
def test_deployed_settings_load_with_the_settings_module(templates: Templates, layout: str) -> None:
    values = evaluated_settings(templates, hubLayout=layout)
    assert set(values) == DEPLOYED
    assert values["O365_TENANTS"] == TENANT, "an empty o365Tenants means the deployment's own tenant"
    assert values["O365_CLIENT_ID"] == "", "the client ID is set by the operator after app registration"
    values["O365_CLIENT_ID"] = "0d6c5b4a-3e2f-4a1b-9c8d-7e6f5a4b3c2d"
    settings = load_settings(values)
    assert settings.function_timeout_seconds == 600
    assert settings.sink == "eventhub" and settings.checkpoint_store == "blob"
    assert settings.tenants[0].credential == "keyvault-certificate"
    hubs = {stream: settings.hub_for(stream) for stream in (*CONTENT_TYPES, MESSAGETRACE_STREAM)}
    if layout == "shared":
        assert set(hubs.values()) == {"o365-audit"}
    else:
        assert hubs == {stream: stream.lower().replace(".", "-") for stream in hubs}
        assert all(re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", hub) for hub in hubs.values())
    main = templates.main
    created = Evaluator(main, params={"hubLayout": layout}).eval("hubNames")
    assert set(hubs.values()) <= set(created), "every stream is sent to a hub the template creates"
    assert settings.eventhub_name in created


def test_event_hubs_namespace_host_name_is_cloud_neutral(templates: Templates) -> None:
    tpl = templates["infra/app/eventhubs.bicep"]
    expr = tpl.outputs["fullyQualifiedNamespace"]["value"]
    for suffix in ("servicebus.windows.net", "servicebus.usgovcloudapi.net"):
        ns = {"properties": {"serviceBusEndpoint": f"https://evhns-x.{suffix}:443/"}}
        assert Evaluator(tpl, symbols={"namespace": ns}).eval(expr) == f"evhns-x.{suffix}"


def test_local_settings_example_lists_every_setting(repo: Path, tmp_path: Path) -> None:
    doc = json.loads((repo / "local.settings.json.example").read_text())
    assert doc["IsEncrypted"] is False
    values = doc["Values"]
    assert values["FUNCTIONS_WORKER_RUNTIME"] == "python"
    assert values["AzureWebJobsStorage"] == "UseDevelopmentStorage=true"
    o365 = {k for k in values if k.startswith("O365_")}
    assert o365 == SETTING_NAMES, (f"missing: {sorted(SETTING_NAMES - o365)}; "
                                   f"unknown: {sorted(o365 - SETTING_NAMES)}")
    assert set(values) - o365 == {"FUNCTIONS_WORKER_RUNTIME", "AzureWebJobsStorage"}
    for name in SECRET:
        assert values[name] == "", f"{name} must stay empty in the example"
    # The example runs against the local simulator: it loads once the simulator's files exist.
    local = dict(values)
    for name in ("O365_CERTIFICATE_PATH", "O365_CA_BUNDLE"):
        path = tmp_path / Path(values[name]).name
        path.write_text("placeholder")
        local[name] = str(path)
    settings = load_settings(local)
    assert settings.sink == "file" and settings.checkpoint_store == "local"
    assert settings.endpoints.login_overridden
