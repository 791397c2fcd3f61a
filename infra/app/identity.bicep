// The one user-assigned managed identity of the Function App. The host (AzureWebJobsStorage,
// deployment container, Application Insights) and the collector code (Event Hubs, checkpoints,
// Key Vault) both use it; its roles are in rbac.bicep.

@description('Name of the user-assigned managed identity.')
param name string

@description('Azure region.')
param location string

@description('Tags for the resource.')
param tags object

resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: name
  location: location
  tags: tags
}

output id string = identity.id
output name string = identity.name
output principalId string = identity.properties.principalId
output clientId string = identity.properties.clientId
