// Optional network isolation (main.bicep parameter vnetEnabled, off by default): a VNet whose
// 'app' subnet carries the Function App's outbound traffic (Flex Consumption VNet integration),
// and private endpoints with private DNS zones for storage (blob, queue, table), Event Hubs and
// Key Vault. With it on, those resources turn public network access off (see their modules).

@description('Virtual network name.')
param name string

@description('Prefix of the private endpoint names.')
param privateEndpointPrefix string

@description('Azure region.')
param location string

@description('Tags for the resources.')
param tags object

@description('Address space of the VNet.')
param addressPrefix string = '10.20.0.0/16'

@description('Subnet of the Function App VNet integration (delegated to Microsoft.App/environments).')
param appSubnetPrefix string = '10.20.1.0/24'

@description('Subnet of the private endpoints.')
param privateEndpointSubnetPrefix string = '10.20.2.0/24'

param storageAccountId string
param eventHubNamespaceId string
param keyVaultId string

// Private DNS zone names differ per Azure cloud; storage has a suffix in environment(), the others
// are listed for Azure public cloud and Azure Government.
var isUsGovernment = environment().name == 'AzureUSGovernment'
var serviceBusZone = isUsGovernment ? 'privatelink.servicebus.usgovcloudapi.net' : 'privatelink.servicebus.windows.net'
var vaultZone = isUsGovernment ? 'privatelink.vaultcore.usgovcloudapi.net' : 'privatelink.vaultcore.azure.net'

var endpoints = [
  {
    name: 'blob'
    resourceId: storageAccountId
    groupId: 'blob'
    zone: 'privatelink.blob.${environment().suffixes.storage}'
  }
  {
    name: 'queue'
    resourceId: storageAccountId
    groupId: 'queue'
    zone: 'privatelink.queue.${environment().suffixes.storage}'
  }
  {
    name: 'table'
    resourceId: storageAccountId
    groupId: 'table'
    zone: 'privatelink.table.${environment().suffixes.storage}'
  }
  {
    name: 'eventhub'
    resourceId: eventHubNamespaceId
    groupId: 'namespace'
    zone: serviceBusZone
  }
  {
    name: 'vault'
    resourceId: keyVaultId
    groupId: 'vault'
    zone: vaultZone
  }
]

resource appSubnetNsg 'Microsoft.Network/networkSecurityGroups@2024-05-01' = {
  name: '${name}-app-nsg'
  location: location
  tags: tags
  properties: {
    securityRules: []
  }
}

resource privateEndpointSubnetNsg 'Microsoft.Network/networkSecurityGroups@2024-05-01' = {
  name: '${name}-pe-nsg'
  location: location
  tags: tags
  properties: {
    securityRules: []
  }
}

resource vnet 'Microsoft.Network/virtualNetworks@2024-05-01' = {
  name: name
  location: location
  tags: tags
  properties: {
    addressSpace: {
      addressPrefixes: [
        addressPrefix
      ]
    }
    subnets: [
      {
        name: 'app'
        properties: {
          addressPrefix: appSubnetPrefix
          networkSecurityGroup: {
            id: appSubnetNsg.id
          }
          delegations: [
            {
              name: 'flex-consumption'
              properties: {
                serviceName: 'Microsoft.App/environments'
              }
            }
          ]
        }
      }
      {
        name: 'private-endpoints'
        properties: {
          addressPrefix: privateEndpointSubnetPrefix
          networkSecurityGroup: {
            id: privateEndpointSubnetNsg.id
          }
          privateEndpointNetworkPolicies: 'Disabled'
        }
      }
    ]
  }
}

resource zones 'Microsoft.Network/privateDnsZones@2020-06-01' = [for endpoint in endpoints: {
  name: endpoint.zone
  location: 'global'
  tags: tags
}]

resource zoneLinks 'Microsoft.Network/privateDnsZones/virtualNetworkLinks@2020-06-01' = [for (endpoint, i) in endpoints: {
  parent: zones[i]
  name: '${name}-link'
  location: 'global'
  tags: tags
  properties: {
    registrationEnabled: false
    virtualNetwork: {
      id: vnet.id
    }
  }
}]

resource privateEndpoints 'Microsoft.Network/privateEndpoints@2024-05-01' = [for endpoint in endpoints: {
  name: '${privateEndpointPrefix}${endpoint.name}'
  location: location
  tags: tags
  properties: {
    subnet: {
      id: vnet.properties.subnets[1].id
    }
    privateLinkServiceConnections: [
      {
        name: endpoint.name
        properties: {
          privateLinkServiceId: endpoint.resourceId
          groupIds: [
            endpoint.groupId
          ]
        }
      }
    ]
  }
}]

resource zoneGroups 'Microsoft.Network/privateEndpoints/privateDnsZoneGroups@2024-05-01' = [for (endpoint, i) in endpoints: {
  parent: privateEndpoints[i]
  name: 'default'
  properties: {
    privateDnsZoneConfigs: [
      {
        name: replace(endpoint.zone, '.', '-')
        properties: {
          privateDnsZoneId: zones[i].id
        }
      }
    ]
  }
}]

output vnetId string = vnet.id
output appSubnetId string = vnet.properties.subnets[0].id
