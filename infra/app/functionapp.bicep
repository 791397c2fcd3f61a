// Function App on the Flex Consumption plan (FC1, Linux), Python 3.11, user-assigned identity.
// Host storage and the deployment package use the identity (no connection strings); every app
// setting is set here (siteConfig.appSettings), from main.bicep (O365_*) and the platform values below.

@description('Function App name. The first 32 characters are its host ID: keep them unique per storage account.')
param name string

@description('Flex Consumption plan name.')
param planName string

@description('Azure region.')
param location string

@description('Tags for the resources.')
param tags object

@description('azd service name; must equal the service key in azure.yaml.')
param serviceName string = 'api'

@description('Resource ID of the user-assigned managed identity.')
param identityId string

@description('Client ID of the user-assigned managed identity.')
param identityClientId string

@description('Blob endpoint of the storage account (https://<account>.blob.<suffix>/).')
param storageBlobEndpoint string

@description('Blob container that Flex Consumption deploys the package to.')
param deploymentContainerName string

@description('Application Insights connection string (not a secret: local authentication is off).')
param appInsightsConnectionString string

@description('Memory of each instance in MB (512, 2048 or 4096).')
@allowed([
  512
  2048
  4096
])
param instanceMemoryMB int

@description('Most instances the app may scale out to (Flex Consumption: 40 to 1000).')
@minValue(40)
@maxValue(1000)
param maximumInstanceCount int

@description('Python version of the Functions runtime.')
@allowed([
  '3.11'
])
param pythonVersion string = '3.11'

@description('Subnet for VNet integration (delegated to Microsoft.App/environments); empty for none.')
param subnetId string = ''

@description('The collector settings (O365_* names from o365ingest/settings.py), built in main.bicep. No secrets.')
param o365Settings object

// Settings Azure and the Functions host read (o365ingest.settings.PLATFORM_SETTINGS).
// Flex Consumption takes no FUNCTIONS_WORKER_RUNTIME / FUNCTIONS_EXTENSION_VERSION /
// WEBSITE_RUN_FROM_PACKAGE: the runtime is functionAppConfig.runtime below.
// The host needs only blobs (timer status, locks, keys), so only the blob endpoint is given: with
// queue or table endpoints it would try to use them (diagnostic events in a table) without a role.
var platformSettings = {
  AZURE_CLIENT_ID: identityClientId
  APPLICATIONINSIGHTS_CONNECTION_STRING: appInsightsConnectionString
  APPLICATIONINSIGHTS_AUTHENTICATION_STRING: 'ClientId=${identityClientId};Authorization=AAD'
  AzureWebJobsStorage__credential: 'managedidentity'
  AzureWebJobsStorage__clientId: identityClientId
  AzureWebJobsStorage__blobServiceUri: storageBlobEndpoint
}

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  //checkov:skip=CKV_AZURE_225:Flex Consumption scales from zero and the timers run as singletons that resume from blob checkpoints; a zone outage delays a run, it loses no data. Zone redundancy would need always-ready instances that bill while idle.
  name: planName
  location: location
  tags: tags
  kind: 'functionapp'
  sku: {
    tier: 'FlexConsumption'
    name: 'FC1'
  }
  properties: {
    reserved: true
  }
}

resource site 'Microsoft.Web/sites@2024-04-01' = {
  //checkov:skip=CKV_AZURE_222:The public endpoint serves only key-protected APIs: the ops functions (backfill and status, function keys, POST only, docs/operations.md), the host admin API (manual runs from the portal) and Entra-authenticated deployments by azd. Outbound traffic uses the VNet when vnetEnabled=true.
  //checkov:skip=CKV_AZURE_17:The only HTTP functions are the ops API, protected by function keys; requiring client certificates would break the portal Test/Run of the timers, which uses the admin API with the master key.
  //checkov:skip=CKV_AZURE_212:Flex Consumption scales from zero by design; the timers are singletons, and a missed occurrence is caught up from the checkpoints on the next run.
  //checkov:skip=CKV_AZURE_213:Health checks need an anonymous HTTP path on always-on instances; this app scales from zero, its HTTP functions need keys, and failed or missing runs raise alerts in Application Insights (alerts.bicep).
  name: name
  location: location
  tags: union(tags, {
    'azd-service-name': serviceName
  })
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identityId}': {}
    }
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    virtualNetworkSubnetId: empty(subnetId) ? null : subnetId
    siteConfig: {
      minTlsVersion: '1.2'
      scmMinTlsVersion: '1.2'
      ftpsState: 'Disabled'
      http20Enabled: true
      // Every app setting: the platform settings above and the collector settings from main.bicep.
      appSettings: [for setting in items(union(platformSettings, o365Settings)): {
        name: setting.key
        value: setting.value
      }]
      // Lets the portal's Code + Test / Test/Run call the admin API to run a timer by hand.
      cors: {
        allowedOrigins: [
          environment().portal
        ]
      }
    }
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${storageBlobEndpoint}${deploymentContainerName}'
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: identityId
          }
        }
      }
      scaleAndConcurrency: {
        instanceMemoryMB: instanceMemoryMB
        maximumInstanceCount: maximumInstanceCount
      }
      runtime: {
        name: 'python'
        version: pythonVersion
      }
    }
  }
}

// No FTP and no basic-auth (publishing profile) deployments: azd deploys with an Entra token.
resource ftpCredentials 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: site
  name: 'ftp'
  properties: {
    allow: false
  }
}

resource scmCredentials 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: site
  name: 'scm'
  properties: {
    allow: false
  }
}

output id string = site.id
output name string = site.name
output defaultHostName string = site.properties.defaultHostName
