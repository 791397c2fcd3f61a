import pytest

from o365ingest.settings import CONTENT_TYPES, SETTINGS, SettingsError, load_settings
from tests.helpers import CLIENT, TENANT, env


def problems(**overrides):
    with pytest.raises(SettingsError) as info:
        load_settings(env(**overrides))
    return info.value.problems


def test_defaults_give_every_content_type_and_the_tenant_as_publisher():
    s = load_settings(env())
    assert s.content_types == CONTENT_TYPES
    assert s.tenants[0].publisher_id == TENANT
    assert s.endpoints.management_url == "https://manage.office.com"


def test_every_wrong_setting_is_reported_at_once_by_name():
    found = problems(O365_TENANTS="not-a-guid", O365_CLIENT_ID="<unset>", O365_SINK="kafka",
                     O365_LOOKBACK_HOURS="200", O365_CONTENT_TYPES="Audit.Exchange,Audit.Teams",
                     O365_MANAGEMENT_URL="http://manage.example.com", O365_AUDIT_SCHEDULE="*/5 * * * *",
                     O365_EVENTHUB_HUBS="Audit.Bogus=x", O365_TYPO="1")
    names = {p.split(":")[0] for p in found}
    assert names >= {"O365_TENANTS", "O365_SINK", "O365_LOOKBACK_HOURS", "O365_CONTENT_TYPES",
                     "O365_MANAGEMENT_URL", "O365_AUDIT_SCHEDULE", "O365_EVENTHUB_HUBS", "O365_TYPO"}
    message = str(SettingsError(found))
    assert f"{len(found)} setting(s)" in message


def test_secrets_are_never_echoed():
    found = problems(O365_EVENTHUB_CONNECTION_STRING="AccountKey=supersecretvalue", O365_EVENTHUB_NAMESPACE="<unset>")
    assert not any("supersecretvalue" in p for p in found)
    assert "supersecretvalue" not in repr(load_settings(env(O365_CLIENT_SECRET="supersecretvalue")))


def test_plain_http_only_for_loopback():
    assert load_settings(env(O365_MANAGEMENT_URL="http://127.0.0.1:8443")).endpoints.management_url == \
        "http://127.0.0.1:8443"
    assert any("loopback" in p for p in problems(O365_GRAPH_URL="http://10.0.0.1"))


def test_message_traces_refused_in_gcc_high_with_an_explanation():
    found = problems(O365_CLOUD="gcchigh", O365_MESSAGETRACE_ENABLED="true")
    assert any(p.startswith("O365_MESSAGETRACE_ENABLED") and "GCC High" in p for p in found)
    assert load_settings(env(O365_CLOUD="gcchigh")).endpoints.management_url == "https://manage.office365.us"


def test_json_tenants_override_defaults_per_tenant():
    other = "11111111-2222-3333-4444-555555555555"
    s = load_settings(env(O365_TENANTS=f'[{{"tenantId": "{TENANT}"}}, {{"tenantId": "{other}", '
                                       f'"clientId": "{CLIENT.upper()}", "publisherId": "{TENANT}"}}]'))
    assert [t.tenant_id for t in s.tenants] == [TENANT, other]
    assert s.tenants[1].publisher_id == TENANT and s.tenants[1].client_id == CLIENT


def test_keyvault_credential_needs_a_vault():
    assert any(p.startswith("O365_KEYVAULT_URL") for p in problems(O365_CREDENTIAL="keyvault-certificate"))


def test_every_setting_has_a_unique_name_and_help():
    names = [s.name for s in SETTINGS]
    assert len(names) == len(set(names))
    assert all(s.help and s.name.startswith("O365_") for s in SETTINGS)
    assert all(not s.deployed for s in SETTINGS if s.secret)
