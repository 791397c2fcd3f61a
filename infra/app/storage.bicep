// Storage account: Functions host storage (AzureWebJobsStorage), the Flex Consumption deployment
// container, and the collector's checkpoint and dead-letter containers.
// Identity-only: shared keys are off, so no connection string to this account exists anywhere.

@description('Storage account name (3-24 lower-case letters and digits, globally unique).')
param name string

@description('Azure region.')
param location string

@description('Tags for the resources.')
param tags object

@description('Replication of the account.')
@allowed([
  'Standard_LRS'
  'Standard_ZRS'
  'Standard_GRS'
  'Standard_GZRS'
])
param skuName string = 'Standard_LRS'

@description('Container that Flex Consumption deploys the app package to.')
param deploymentContainerName string

@description('Container of the collector checkpoints and locks (O365_CHECKPOINT_CONTAINER).')
param checkpointContainerName string

@description('Container of dead-lettered data (O365_DEADLETTER_CONTAINER).')
param deadLetterContainerName string

@description('Disabled when the account is reached through a private endpoint only (main.bicep vnetEnabled, network.bicep).')
@allowed([
  'Enabled'
  'Disabled'
])
param publicNetworkAccess string = 'Enabled'

@description('Days that deleted blobs and containers stay recoverable.')
@minValue(1)
@maxValue(365)
param deleteRetentionDays int = 7

// Without public access, nothing but the private endpoint (and trusted Azure services) gets in.
var networkDefaultAction = (publicNetworkAccess == 'Disabled') ? 'Deny' : 'Allow'

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  //checkov:skip=CKV_AZURE_35:The network default action is Deny when vnetEnabled=true (private endpoints). Without a VNet the Flex app reaches the account over its public endpoint, so Allow is required; access still needs an Entra token and a data role (shared key is off).
  //checkov:skip=CKV_AZURE_59:Public network access is Disabled when vnetEnabled=true (private endpoints). Without a VNet the Flex host and the deployment reach the account over its public endpoint; requests need an Entra token and a data role (shared key is off, no anonymous blob access).
  //checkov:skip=CKV_AZURE_206:Replication is the skuName parameter (Standard_ZRS or geo options for production). The LRS default is for cost: checkpoints can be rebuilt from the 7-day Management API window and the deployment package from the repository.
  name: name
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: {
    name: skuName
  }
  properties: {
    accessTier: 'Hot'
    allowBlobPublicAccess: false
    allowSharedKeyAccess: false
    allowCrossTenantReplication: false
    defaultToOAuthAuthentication: true
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    publicNetworkAccess: publicNetworkAccess
    networkAcls: {
      bypass: 'AzureServices'
      defaultAction: networkDefaultAction
    }
  }
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: storage
  name: 'default'
  properties: {
    deleteRetentionPolicy: {
      enabled: true
      days: deleteRetentionDays
    }
    containerDeleteRetentionPolicy: {
      enabled: true
      days: deleteRetentionDays
    }
  }
}

var containerNames = [
  deploymentContainerName
  checkpointContainerName
  deadLetterContainerName
]

resource containers 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = [for containerName in containerNames: {
  parent: blobService
  name: containerName
  properties: {
    publicAccess: 'None'
  }
}]

output id string = storage.id
output name string = storage.name
output blobEndpoint string = storage.properties.primaryEndpoints.blob
