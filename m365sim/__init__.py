"""Local Microsoft 365 simulator.

One HTTPS process that plays Entra ID, the Office 365 Management Activity API, Graph and
legacy message traces, Key Vault and the App Service managed-identity endpoint, so the
product can be tested end to end with the real MSAL and Azure SDK clients.
"""
