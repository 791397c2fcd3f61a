// Every role assignment of the deployment, each scoped to the one resource it is needed on
// (never the resource group or subscription). Names are guid(scope, principal, role), so they are
// stable across re-deployments and unique per environment.

@description('Principal (object) ID of the Function App managed identity.')
param appPrincipalId string

@description('Object ID of the person or principal running azd; empty to grant nothing.')
param deployerPrincipalId string = ''

@description('Principal type of deployerPrincipalId.')
@allowed([
  'User'
  'ServicePrincipal'
  'Group'
])
param deployerPrincipalType string = 'User'

@description('Give the deployer Key Vault Certificates Officer on the vault, to create or import the app certificate.')
param grantDeployerCertificateAccess bool = true

@description('Give the deployer the data roles of the app (send to hubs, checkpoints, certificate secret) for local runs.')
param grantDeployerDataAccess bool = false

param storageAccountName string
param checkpointContainerName string
param deadLetterContainerName string
param eventHubNamespaceName string
param hubNames array
param keyVaultName string
param appInsightsName string

// Built-in role definition IDs (same in every Azure cloud).
var roles = {
  eventHubsDataSender: '2b629674-e913-4c01-ae53-ef4638d8f975'
  storageBlobDataOwner: 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b'
  storageBlobDataContributor: 'ba92f5b4-2d11-453d-a403-e96b0029c9fe'
  keyVaultSecretsUser: '4633458b-17de-408a-b874-0445c86b69e6'
  keyVaultCertificatesOfficer: 'a4417e6f-fecd-4de8-b567-7b0420556985'
  monitoringMetricsPublisher: '3913510d-42f4-4e42-8a64-420c390055eb'
}

var dataContainerNames = [
  checkpointContainerName
  deadLetterContainerName
]
var grantDeployerData = grantDeployerDataAccess && !empty(deployerPrincipalId)
var grantDeployerCertificates = grantDeployerCertificateAccess && !empty(deployerPrincipalId)

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' existing = {
  parent: storage
  name: 'default'
}

resource dataContainers 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' existing = [for containerName in dataContainerNames: {
  parent: blobService
  name: containerName
}]

resource namespace 'Microsoft.EventHub/namespaces@2024-01-01' existing = {
  name: eventHubNamespaceName
}

resource hubs 'Microsoft.EventHub/namespaces/eventhubs@2024-01-01' existing = [for hubName in hubNames: {
  parent: namespace
  name: hubName
}]

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' existing = {
  name: keyVaultName
}

resource appInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: appInsightsName
}

// --- The Function App identity

// Functions host storage (AzureWebJobsStorage): timer schedule status, singleton locks, host keys.
// The host creates its own containers, so it needs Blob Data Owner on the account.
resource appHostStorage 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, appPrincipalId, roles.storageBlobDataOwner)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataOwner)
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// The collector's own data: checkpoints (with blob leases) and dead letters, per container. Today
// the same identity also holds Owner above for the host; these keep the app's data access explicit
// and still hold if host storage moves to another account.
resource appDataContainers 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for (containerName, i) in dataContainerNames: {
  name: guid(dataContainers[i].id, appPrincipalId, roles.storageBlobDataContributor)
  scope: dataContainers[i]
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataContributor)
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
  }
}]

// Publish events, on each hub (not the namespace).
resource appSendsToHubs 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for (hubName, i) in hubNames: {
  name: guid(hubs[i].id, appPrincipalId, roles.eventHubsDataSender)
  scope: hubs[i]
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.eventHubsDataSender)
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
  }
}]

// Read the certificate's secret (PEM: private key + chain). Scoped to the vault, not to the
// secret: the secret is created by the operator after provisioning, and a role assignment needs
// its scope to exist. The vault holds only this app's certificate, so the effect is the same;
// keep other secrets out of it.
resource appReadsCertificate 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(vault.id, appPrincipalId, roles.keyVaultSecretsUser)
  scope: vault
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.keyVaultSecretsUser)
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// Send telemetry to Application Insights with an Entra token (local authentication is off).
resource appPublishesTelemetry 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(appInsights.id, appPrincipalId, roles.monitoringMetricsPublisher)
  scope: appInsights
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.monitoringMetricsPublisher)
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// --- The deployer (AZURE_PRINCIPAL_ID), optional

// Create or import the app certificate and download its public part (no secret read).
resource deployerManagesCertificates 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (grantDeployerCertificates) {
  name: guid(vault.id, deployerPrincipalId, roles.keyVaultCertificatesOfficer)
  scope: vault
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.keyVaultCertificatesOfficer)
    principalId: deployerPrincipalId
    principalType: deployerPrincipalType
  }
}

// Local runs against Azure (off by default): the same data roles as the app.
resource deployerDataContainers 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for (containerName, i) in (grantDeployerData ? dataContainerNames : []): {
  name: guid(dataContainers[i].id, deployerPrincipalId, roles.storageBlobDataContributor)
  scope: dataContainers[i]
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataContributor)
    principalId: deployerPrincipalId
    principalType: deployerPrincipalType
  }
}]

resource deployerSendsToHubs 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for (hubName, i) in (grantDeployerData ? hubNames : []): {
  name: guid(hubs[i].id, deployerPrincipalId, roles.eventHubsDataSender)
  scope: hubs[i]
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.eventHubsDataSender)
    principalId: deployerPrincipalId
    principalType: deployerPrincipalType
  }
}]

resource deployerReadsCertificate 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (grantDeployerData) {
  name: guid(vault.id, deployerPrincipalId, roles.keyVaultSecretsUser)
  scope: vault
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.keyVaultSecretsUser)
    principalId: deployerPrincipalId
    principalType: deployerPrincipalType
  }
}
