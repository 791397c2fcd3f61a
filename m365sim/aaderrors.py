"""Entra ID (AADSTS) error responses in the exact JSON shape login.microsoftonline.com uses.

Message texts are Microsoft's own wording as seen in public error reports (issue threads
quoting real responses); ``Trace ID``/``Correlation ID``/``Timestamp`` are appended the
way Entra does, and ``correlation_id`` echoes the client's ``client-request-id``.
"""

from __future__ import annotations

import uuid

from aiohttp import web

from m365sim.clock import entra_timestamp, utcnow
from m365sim.httputil import REQUEST_ID, ErrorResponse, json_response

CERT_DOC = "Review the documentation at https://learn.microsoft.com/entra/identity-platform/certificate-credentials ."


def aad_error(request: web.Request, status: int, error: str, code: int, message: str) -> ErrorResponse:
    """An ``ErrorResponse`` carrying Entra's error body for AADSTS ``code``."""
    now = utcnow()
    trace_id = request.get(REQUEST_ID) or str(uuid.uuid4())
    correlation_id = request.headers.get("client-request-id") or str(uuid.uuid4())
    stamp = entra_timestamp(now)
    body = {
        "error": error,
        "error_description": (
            f"AADSTS{code}: {message} Trace ID: {trace_id} Correlation ID: {correlation_id} Timestamp: {stamp}"
        ),
        "error_codes": [code],
        "timestamp": stamp,
        "trace_id": trace_id,
        "correlation_id": correlation_id,
        "error_uri": f"https://login.microsoftonline.com/error?code={code}",
    }
    response = json_response(body, status=status)
    response.headers["Cache-Control"] = "no-store, no-cache"
    response.headers["Pragma"] = "no-cache"
    return ErrorResponse(response, f"AADSTS{code}")


def tenant_not_found(request: web.Request, tenant: str) -> ErrorResponse:
    return aad_error(
        request,
        400,
        "invalid_tenant",
        90002,
        f"Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are signing into "
        "the correct cloud. Check with your subscription administrator, this may happen if there are no active "
        "subscriptions for the tenant.",
    )


def missing_parameter(request: web.Request, name: str) -> ErrorResponse:
    return aad_error(
        request, 400, "invalid_request", 900144, f"The request body must contain the following parameter: '{name}'."
    )


def unsupported_grant(request: web.Request, grant: str) -> ErrorResponse:
    return aad_error(
        request, 400, "unsupported_grant_type", 70003, f"The app requested an unsupported grant type '{grant}'."
    )


def app_not_found(request: web.Request, client_id: str, tenant_name: str) -> ErrorResponse:
    return aad_error(
        request,
        400,
        "unauthorized_client",
        700016,
        f"Application with identifier '{client_id}' was not found in the directory '{tenant_name}'. This can "
        "happen if the application has not been installed by the administrator of the tenant or consented to by "
        "any user in the tenant. You may have sent your authentication request to the wrong tenant.",
    )


def app_disabled(request: web.Request, client_id: str, display_name: str) -> ErrorResponse:
    return aad_error(
        request, 400, "unauthorized_client", 7000112, f"Application '{client_id}'({display_name}) is disabled."
    )


def credential_missing(request: web.Request) -> ErrorResponse:
    return aad_error(
        request,
        401,
        "invalid_client",
        7000218,
        "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
    )


def bad_secret(request: web.Request, client_id: str) -> ErrorResponse:
    return aad_error(
        request,
        401,
        "invalid_client",
        7000215,
        "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, "
        f"not the client secret ID, for a secret added to app '{client_id}'.",
    )


def malformed_assertion(request: web.Request) -> ErrorResponse:
    return aad_error(request, 400, "invalid_request", 50027, "JWT token is invalid or malformed.")


def key_not_found(request: web.Request, client_id: str, thumbprint: str) -> ErrorResponse:
    return aad_error(
        request,
        401,
        "invalid_client",
        700027,
        "The certificate with identifier used to sign the client assertion is not registered on application. "
        f"[Reason - The key was not found., Thumbprint of key used by client: '{thumbprint}', Please visit the "
        f"Azure Portal, Graph Explorer or directly use MS Graph to see configured keys for app Id '{client_id}'. "
        "Review the documentation at https://docs.microsoft.com/en-us/graph/deployments to determine the "
        "corresponding service endpoint and https://docs.microsoft.com/en-us/graph/api/application-get?"
        "view=graph-rest-1.0&tabs=http to build a query request URL, such as "
        f"'https://graph.microsoft.com/beta/applications/{client_id}']. Alternatively, SNI may be configured on "
        "the app. Please ensure that client assertion is being sent with the x5c claim in the JWT header using "
        "MSAL's WithSendX5C() method so that Azure Active Directory can validate the certificate being used.",
    )


def bad_signature(request: web.Request, thumbprint: str, key_window: str) -> ErrorResponse:
    return aad_error(
        request,
        401,
        "invalid_client",
        700027,
        "Client assertion contains an invalid signature. [Reason - Key was found, but use of the key to verify "
        f"the signature failed., Thumbprint of key used by client: '{thumbprint}', Found key '{key_window}']",
    )


def key_expired(request: web.Request, thumbprint: str, key_window: str) -> ErrorResponse:
    return aad_error(
        request,
        401,
        "invalid_client",
        700027,
        "Client assertion contains an invalid signature. [Reason - The key used is expired., Thumbprint of key "
        f"used by client: '{thumbprint}', Found key '{key_window}']",
    )


def assertion_time(request: web.Request, now: str, valid_from: str, expiry: str) -> ErrorResponse:
    return aad_error(
        request,
        401,
        "invalid_client",
        700024,
        f"Client assertion is not within its valid time range. Current time: {now}, assertion valid from "
        f"{valid_from}, expiry time of assertion {expiry}. {CERT_DOC}",
    )


def assertion_audience(request: web.Request) -> ErrorResponse:
    return aad_error(
        request,
        401,
        "invalid_client",
        700023,
        f"Client assertion audience claim does not match Realm issuer. {CERT_DOC}",
    )


def assertion_subject(request: web.Request) -> ErrorResponse:
    return aad_error(
        request,
        401,
        "invalid_client",
        700021,
        f"Client assertion application identifier doesn't match 'client_id' parameter. {CERT_DOC}",
    )


def invalid_scope(request: web.Request, scope: str) -> ErrorResponse:
    return aad_error(
        request,
        400,
        "invalid_scope",
        1002012,
        f"The provided value for scope {scope} is not valid. Client credential flows must have a scope value "
        "with /.default suffixed to the resource identifier (application ID URI).",
    )


def resource_not_found(request: web.Request, resource: str, tenant_name: str) -> ErrorResponse:
    return aad_error(
        request,
        400,
        "invalid_resource",
        500011,
        f"The resource principal named {resource} was not found in the tenant named {tenant_name}. This can "
        "happen if the application has not been installed by the administrator of the tenant or consented to by "
        "any user in the tenant. You might have sent your authentication request to the wrong tenant.",
    )


def throttled(request: web.Request) -> ErrorResponse:
    error = aad_error(
        request,
        429,
        "temporarily_unavailable",
        50196,
        "The server terminated an operation because it encountered a client request loop. Please contact your "
        "app vendor.",
    )
    error.response.headers["Retry-After"] = "1"
    return error
