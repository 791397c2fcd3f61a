// Event Hubs namespace and the hubs the collector publishes to.
// Entra ID only: local (SAS) authentication is off and no authorization rule is created, so no
// connection string for this namespace exists. Senders get a role on each hub in rbac.bicep.

@description('Namespace name (6-50 characters, globally unique).')
param name string

@description('Azure region.')
param location string

@description('Tags for the resources.')
param tags object

@description('Names of the event hubs to create.')
param hubNames array

@description('Partitions per event hub (cannot be lowered later).')
@minValue(1)
@maxValue(32)
param partitionCount int

@description('Days an event stays readable (Standard tier: 1 to 7).')
@minValue(1)
@maxValue(7)
param messageRetentionInDays int

@description('Throughput units of the Standard namespace.')
@minValue(1)
@maxValue(40)
param capacity int = 1

@description('Disabled when the namespace is reached through a private endpoint only (main.bicep vnetEnabled, network.bicep).')
@allowed([
  'Enabled'
  'Disabled'
])
param publicNetworkAccess string = 'Enabled'

resource namespace 'Microsoft.EventHub/namespaces@2024-01-01' = {
  name: name
  location: location
  tags: tags
  sku: {
    name: 'Standard'
    tier: 'Standard'
    capacity: capacity
  }
  properties: {
    disableLocalAuth: true
    minimumTlsVersion: '1.2'
    publicNetworkAccess: publicNetworkAccess
    isAutoInflateEnabled: false
  }
}

resource hubs 'Microsoft.EventHub/namespaces/eventhubs@2024-01-01' = [for hubName in hubNames: {
  parent: namespace
  name: hubName
  properties: {
    partitionCount: partitionCount
    messageRetentionInDays: messageRetentionInDays
  }
}]

output id string = namespace.id
output name string = namespace.name
// serviceBusEndpoint is https://<namespace>.<cloud suffix>:443/; the SDK wants the bare host name.
// Taking it from the endpoint keeps national clouds (servicebus.usgovcloudapi.net, ...) right.
output fullyQualifiedNamespace string = replace(replace(namespace.properties.serviceBusEndpoint, 'https://', ''), ':443/', '')
output hubNames array = hubNames
