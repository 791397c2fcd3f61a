// o365ingest: Microsoft 365 audit logs and Exchange message traces into Azure Event Hubs.
// Entry point for `azd provision` (subscription scope: creates the resource group, then the
// modules in ./app). Parameters come from main.parameters.json, which maps each one to an azd
// environment variable; every O365_* parameter is set with the setting's own name, e.g.
//   azd env set O365_LOOKBACK_HOURS 48 && azd provision
// Nothing here takes or produces a secret.
targetScope = 'subscription'

// ---------------------------------------------------------------------------------------------
// Environment (azd sets these)

@minLength(1)
@maxLength(64)
@description('Name of the azd environment; part of every resource name and the azd-env-name tag.')
param environmentName string

@minLength(1)
@description('Azure region of every resource (Flex Consumption must be available there).')
@metadata({
  azd: {
    type: 'location'
  }
})
param location string

@description('Object ID of the user or service principal running azd (AZURE_PRINCIPAL_ID); empty to grant it nothing.')
param principalId string = ''

@description('Principal type of principalId (AZURE_PRINCIPAL_TYPE).')
@allowed([
  'User'
  'ServicePrincipal'
])
param principalType string = 'User'

@description('Give principalId Key Vault Certificates Officer on the vault, to create or import the app certificate.')
param grantDeployerCertificateAccess bool = true

@description('Give principalId the data roles of the app (send to the hubs, checkpoint and dead-letter containers, read the certificate secret), to run the collector locally against Azure.')
param grantDeployerDataAccess bool = false

// ---------------------------------------------------------------------------------------------
// Infrastructure

@description('Memory of each Function App instance in MB.')
@allowed([
  512
  2048
  4096
])
param instanceMemoryMB int = 2048

@description('Most instances the Function App may scale out to (Flex Consumption: 40 to 1000). Timers run as singletons.')
@minValue(40)
@maxValue(1000)
param maximumInstanceCount int = 40

@description('shared: one event hub (o365-audit) for every stream; perStream: one hub per audit content type plus one for message traces.')
@allowed([
  'shared'
  'perStream'
])
param hubLayout string = 'shared'

@description('Partitions per event hub (cannot be lowered later).')
@minValue(1)
@maxValue(32)
param eventHubPartitionCount int = 4

@description('Days events stay readable in the hubs (Standard tier: 1 to 7).')
@minValue(1)
@maxValue(7)
param eventHubRetentionDays int = 7

@description('Put the Function App in a VNet and reach storage, Event Hubs and Key Vault through private endpoints only.')
param vnetEnabled bool = false

@description('Days a deleted Key Vault or certificate stays recoverable (purge protection is on); fixed once the vault exists.')
@minValue(7)
@maxValue(90)
param keyVaultSoftDeleteRetentionDays int = 7

@description('Days the Log Analytics workspace keeps data.')
@minValue(30)
@maxValue(730)
param logAnalyticsRetentionDays int = 30

@description('Resource ID of an existing action group for the alert rules (infra/app/alerts.bicep); empty for none.')
param alertActionGroupId string = ''

@description('Alert when a live stream\'s watermark is older than this many minutes.')
@minValue(15)
param alertLagThresholdMinutes int = 120

@description('Alert when no live run was reported for this long: at least three audit timer periods.')
@allowed([
  'PT15M'
  'PT30M'
  'PT45M'
  'PT1H'
  'PT2H'
  'PT6H'
])
param alertStalledWindow string = 'PT30M'

// ---------------------------------------------------------------------------------------------
// Collector settings. Each parameter is the app setting of the same name in o365ingest/settings.py
// (o365FooBar <- O365_FOO_BAR); defaults are the code's defaults.

@description('O365_TENANTS: tenant GUIDs to collect, comma-separated, or a JSON array. Empty: the tenant of this subscription.')
param o365Tenants string = ''

@description('O365_CLIENT_ID: application (client) ID of the app registration. Set it once the app is registered (docs/deploy.md).')
param o365ClientId string = ''

@description('O365_CERTIFICATE_NAME: name of the certificate in the Key Vault.')
param o365CertificateName string = 'o365ingest'

@description('O365_PUBLISHER_ID: PublisherIdentifier for the Management API. Empty: each tenant GUID.')
param o365PublisherId string = ''

@description('O365_CLOUD: Microsoft 365 cloud of the tenants.')
@allowed([
  'commercial'
  'gcc'
  'gcchigh'
  'dod'
])
param o365Cloud string = 'commercial'

@description('O365_CONTENT_TYPES: audit content types to collect.')
param o365ContentTypes string = 'Audit.AzureActiveDirectory,Audit.Exchange,Audit.SharePoint,Audit.General,DLP.All'

@description('O365_EVENTHUB_PARTITION_KEY: none, tenant or stream.')
@allowed([
  'none'
  'tenant'
  'stream'
])
param o365EventhubPartitionKey string = 'none'

@description('O365_EVENT_ENVELOPE: record (one record per event) or records.')
@allowed([
  'record'
  'records'
])
param o365EventEnvelope string = 'record'

@description('O365_AUDIT_SCHEDULE: six-field NCRONTAB schedule of the audit timer, in UTC.')
param o365AuditSchedule string = '0 */5 * * * *'

@description('O365_LOOKBACK_HOURS: how far back the first run of a stream starts (at most 167).')
param o365LookbackHours string = '24'

@description('O365_OVERLAP_MINUTES: how much each run re-lists before the watermark.')
param o365OverlapMinutes string = '60'

@description('O365_SAFETY_LAG_MINUTES: windows end this long before now.')
param o365SafetyLagMinutes string = '1'

@description('O365_FETCH_CONCURRENCY: blob downloads in flight per tenant.')
param o365FetchConcurrency string = '16'

@description('O365_REQUESTS_PER_MINUTE: client-side Management API budget per tenant.')
param o365RequestsPerMinute string = '1200'

@description('O365_RUN_BUDGET_FRACTION: stop taking new work at this fraction of the function timeout.')
param o365RunBudgetFraction string = '0.8'

@description('O365_HTTP_TIMEOUT_SECONDS: per-request timeout for Microsoft APIs.')
param o365HttpTimeoutSeconds string = '60'

@description('O365_MAX_ATTEMPTS: attempts per request before a blob is dead-lettered.')
param o365MaxAttempts string = '6'

@description('O365_MESSAGETRACE_ENABLED: collect Exchange message traces (not available in gcchigh or dod).')
@allowed([
  'true'
  'false'
])
param o365MessagetraceEnabled string = 'false'

@description('O365_MESSAGETRACE_SOURCE: graph or rws (legacy Reporting Web Service).')
@allowed([
  'graph'
  'rws'
])
param o365MessagetraceSource string = 'graph'

@description('O365_MESSAGETRACE_SCHEDULE: six-field NCRONTAB schedule of the message-trace timer, in UTC.')
param o365MessagetraceSchedule string = '0 */5 * * * *'

@description('O365_MESSAGETRACE_LOOKBACK_HOURS: how far back the first trace run starts.')
param o365MessagetraceLookbackHours string = '24'

@description('O365_MESSAGETRACE_OVERLAP_MINUTES: how much each trace run re-reads before the watermark.')
param o365MessagetraceOverlapMinutes string = '120'

@description('O365_MESSAGETRACE_MIN_AGE_MINUTES: trace windows end this long before now.')
param o365MessagetraceMinAgeMinutes string = '10'

@description('O365_MESSAGETRACE_QUOTA_SHARE: share of the tenant message-trace quota this collector may use.')
param o365MessagetraceQuotaShare string = '0.5'

@description('O365_MESSAGETRACE_DETAILS: also fetch details per trace (same quota).')
@allowed([
  'true'
  'false'
])
param o365MessagetraceDetails string = 'false'

@description('O365_LOG_LEVEL: level of the collector loggers.')
@allowed([
  'DEBUG'
  'INFO'
  'WARNING'
  'ERROR'
])
param o365LogLevel string = 'INFO'

// ---------------------------------------------------------------------------------------------
// Names

var abbrs = loadJsonContent('./abbreviations.json')
var resourceToken = toLower(uniqueString(subscription().id, environmentName, location))
var tags = {
  'azd-env-name': environmentName
}
var functionAppName = '${abbrs.webSitesFunctions}${resourceToken}'
var deploymentContainerName = 'app-package'
var checkpointContainerName = 'checkpoints'
var deadLetterContainerName = 'deadletter'
// With vnetEnabled, storage, Event Hubs and Key Vault are reached through private endpoints only.
var publicNetworkAccess = vnetEnabled ? 'Disabled' : 'Enabled'

// Event hubs. The stream names are o365ingest.settings CONTENT_TYPES plus MESSAGETRACE_STREAM.
var streams = [
  'Audit.AzureActiveDirectory'
  'Audit.Exchange'
  'Audit.SharePoint'
  'Audit.General'
  'DLP.All'
  'MessageTrace'
]
var sharedHubName = 'o365-audit'
var perStreamHubNames = [for stream in streams: toLower(replace(stream, '.', '-'))]
var perStreamHubPairs = [for stream in streams: '${stream}=${toLower(replace(stream, '.', '-'))}']
var hubNames = (hubLayout == 'shared') ? [
  sharedHubName
] : perStreamHubNames
// perStream maps every stream, so the default hub is only a fallback: the general audit hub.
var defaultHubName = (hubLayout == 'shared') ? sharedHubName : 'audit-general'
var hubMap = (hubLayout == 'shared') ? '' : join(perStreamHubPairs, ',')

// The run budget is taken from the function timeout, so both come from host.json ("hh:mm:ss").
var hostJson = loadJsonContent('../host.json')
var functionTimeoutParts = split(hostJson.functionTimeout, ':')
var functionTimeoutSeconds = (int(functionTimeoutParts[0]) * 3600) + (int(functionTimeoutParts[1]) * 60) + int(functionTimeoutParts[2])

// ---------------------------------------------------------------------------------------------
// Resources

resource rg 'Microsoft.Resources/resourceGroups@2024-03-01' = {
  name: '${abbrs.resourcesResourceGroups}${environmentName}'
  location: location
  tags: tags
}

module identity './app/identity.bicep' = {
  name: 'identity'
  scope: rg
  params: {
    name: '${abbrs.managedIdentityUserAssignedIdentities}${resourceToken}'
    location: location
    tags: tags
  }
}

module storage './app/storage.bicep' = {
  name: 'storage'
  scope: rg
  params: {
    name: '${abbrs.storageStorageAccounts}${resourceToken}'
    location: location
    tags: tags
    deploymentContainerName: deploymentContainerName
    checkpointContainerName: checkpointContainerName
    deadLetterContainerName: deadLetterContainerName
    publicNetworkAccess: publicNetworkAccess
  }
}

module eventHubs './app/eventhubs.bicep' = {
  name: 'eventhubs'
  scope: rg
  params: {
    name: '${abbrs.eventHubNamespaces}${resourceToken}'
    location: location
    tags: tags
    hubNames: hubNames
    partitionCount: eventHubPartitionCount
    messageRetentionInDays: eventHubRetentionDays
    publicNetworkAccess: publicNetworkAccess
  }
}

module keyVault './app/keyvault.bicep' = {
  name: 'keyvault'
  scope: rg
  params: {
    name: '${abbrs.keyVaultVaults}${resourceToken}'
    location: location
    tags: tags
    softDeleteRetentionInDays: keyVaultSoftDeleteRetentionDays
    publicNetworkAccess: publicNetworkAccess
  }
}

module monitoring './app/monitoring.bicep' = {
  name: 'monitoring'
  scope: rg
  params: {
    logAnalyticsName: '${abbrs.operationalInsightsWorkspaces}${resourceToken}'
    appInsightsName: '${abbrs.insightsComponents}${resourceToken}'
    location: location
    tags: tags
    retentionInDays: logAnalyticsRetentionDays
    actionGroupId: alertActionGroupId
    lagThresholdMinutes: alertLagThresholdMinutes
    stalledWindow: alertStalledWindow
  }
}

module network './app/network.bicep' = if (vnetEnabled) {
  name: 'network'
  scope: rg
  params: {
    name: '${abbrs.networkVirtualNetworks}${resourceToken}'
    privateEndpointPrefix: '${abbrs.networkPrivateEndpoints}${resourceToken}-'
    location: location
    tags: tags
    storageAccountId: storage.outputs.id
    eventHubNamespaceId: eventHubs.outputs.id
    keyVaultId: keyVault.outputs.id
  }
}

module rbac './app/rbac.bicep' = {
  name: 'rbac'
  scope: rg
  params: {
    appPrincipalId: identity.outputs.principalId
    deployerPrincipalId: principalId
    deployerPrincipalType: principalType
    grantDeployerCertificateAccess: grantDeployerCertificateAccess
    grantDeployerDataAccess: grantDeployerDataAccess
    storageAccountName: storage.outputs.name
    checkpointContainerName: checkpointContainerName
    deadLetterContainerName: deadLetterContainerName
    eventHubNamespaceName: eventHubs.outputs.name
    hubNames: eventHubs.outputs.hubNames
    keyVaultName: keyVault.outputs.name
    appInsightsName: monitoring.outputs.appInsightsName
  }
}

// Every deployed setting of o365ingest/settings.py (SETTINGS with deployed=True), by its own name.
// Values are parameters or names/endpoints of the resources above; none is a secret.
var o365Settings = {
  O365_TENANTS: empty(o365Tenants) ? tenant().tenantId : o365Tenants
  O365_CLIENT_ID: o365ClientId
  // The only credential that works without a secret or a file in the app: the certificate in Key Vault.
  O365_CREDENTIAL: 'keyvault-certificate'
  O365_KEYVAULT_URL: keyVault.outputs.uri
  O365_CERTIFICATE_NAME: o365CertificateName
  O365_PUBLISHER_ID: o365PublisherId
  O365_CLOUD: o365Cloud
  O365_CONTENT_TYPES: o365ContentTypes
  O365_SINK: 'eventhub'
  O365_EVENTHUB_NAMESPACE: eventHubs.outputs.fullyQualifiedNamespace
  O365_EVENTHUB_NAME: defaultHubName
  O365_EVENTHUB_HUBS: hubMap
  O365_EVENTHUB_PARTITION_KEY: o365EventhubPartitionKey
  O365_EVENT_ENVELOPE: o365EventEnvelope
  O365_CHECKPOINT_STORE: 'blob'
  O365_STORAGE_ACCOUNT_URL: storage.outputs.blobEndpoint
  O365_CHECKPOINT_CONTAINER: checkpointContainerName
  O365_DEADLETTER_CONTAINER: deadLetterContainerName
  O365_AUDIT_SCHEDULE: o365AuditSchedule
  O365_LOOKBACK_HOURS: o365LookbackHours
  O365_OVERLAP_MINUTES: o365OverlapMinutes
  O365_SAFETY_LAG_MINUTES: o365SafetyLagMinutes
  O365_FETCH_CONCURRENCY: o365FetchConcurrency
  O365_REQUESTS_PER_MINUTE: o365RequestsPerMinute
  O365_RUN_BUDGET_FRACTION: o365RunBudgetFraction
  O365_FUNCTION_TIMEOUT_SECONDS: string(functionTimeoutSeconds)
  O365_HTTP_TIMEOUT_SECONDS: o365HttpTimeoutSeconds
  O365_MAX_ATTEMPTS: o365MaxAttempts
  O365_MESSAGETRACE_ENABLED: o365MessagetraceEnabled
  O365_MESSAGETRACE_SOURCE: o365MessagetraceSource
  O365_MESSAGETRACE_SCHEDULE: o365MessagetraceSchedule
  O365_MESSAGETRACE_LOOKBACK_HOURS: o365MessagetraceLookbackHours
  O365_MESSAGETRACE_OVERLAP_MINUTES: o365MessagetraceOverlapMinutes
  O365_MESSAGETRACE_MIN_AGE_MINUTES: o365MessagetraceMinAgeMinutes
  O365_MESSAGETRACE_QUOTA_SHARE: o365MessagetraceQuotaShare
  O365_MESSAGETRACE_DETAILS: o365MessagetraceDetails
  O365_LOG_LEVEL: o365LogLevel
}

module functionApp './app/functionapp.bicep' = {
  name: 'functionapp'
  scope: rg
  params: {
    name: functionAppName
    planName: '${abbrs.webServerFarms}${resourceToken}'
    location: location
    tags: tags
    identityId: identity.outputs.id
    identityClientId: identity.outputs.clientId
    storageBlobEndpoint: storage.outputs.blobEndpoint
    deploymentContainerName: deploymentContainerName
    appInsightsConnectionString: monitoring.outputs.connectionString
    instanceMemoryMB: instanceMemoryMB
    maximumInstanceCount: maximumInstanceCount
    subnetId: vnetEnabled ? network.outputs.appSubnetId : ''
    o365Settings: o365Settings
  }
  // Start the app only once its identity can reach host storage, hubs, vault and telemetry.
  dependsOn: [
    rbac
  ]
}

// ---------------------------------------------------------------------------------------------
// Outputs: written to .azure/<env>/.env by azd (see `azd env get-values`). No secrets.

output AZURE_LOCATION string = location
output AZURE_TENANT_ID string = tenant().tenantId
output AZURE_RESOURCE_GROUP string = rg.name
output SERVICE_API_NAME string = functionApp.outputs.name
output AZURE_FUNCTION_NAME string = functionApp.outputs.name
output AZURE_FUNCTION_HOST_NAME string = functionApp.outputs.defaultHostName
// Client ID of the app's managed identity (the app's AZURE_CLIENT_ID setting). Named apart from
// AZURE_CLIENT_ID so that loading this environment locally does not select a managed identity.
output AZURE_FUNCTION_IDENTITY_CLIENT_ID string = identity.outputs.clientId
output AZURE_KEY_VAULT_NAME string = keyVault.outputs.name
output AZURE_STORAGE_ACCOUNT_NAME string = storage.outputs.name
output AZURE_EVENTHUB_NAMESPACE_NAME string = eventHubs.outputs.name
output APPLICATIONINSIGHTS_CONNECTION_STRING string = monitoring.outputs.connectionString
output O365_KEYVAULT_URL string = keyVault.outputs.uri
output O365_EVENTHUB_NAMESPACE string = eventHubs.outputs.fullyQualifiedNamespace
output O365_EVENTHUB_NAME string = defaultHubName
output O365_EVENTHUB_HUBS string = hubMap
output O365_STORAGE_ACCOUNT_URL string = storage.outputs.blobEndpoint
output O365_CHECKPOINT_CONTAINER string = checkpointContainerName
output O365_DEADLETTER_CONTAINER string = deadLetterContainerName
