// Key Vault that holds the app registration's certificate.
// The template never creates the certificate or any secret: the operator creates or imports it
// (docs/deploy.md), so no key material ever passes through a deployment. Access is Azure RBAC only
// (no access policies); roles are in rbac.bicep.

@description('Key Vault name (3-24 characters, globally unique; a soft-deleted vault keeps its name).')
param name string

@description('Azure region.')
param location string

@description('Tags for the resource.')
param tags object

@description('Days a deleted vault (and a deleted certificate) stays recoverable; fixed once the vault exists.')
@minValue(7)
@maxValue(90)
param softDeleteRetentionInDays int = 7

@description('Disabled when the vault is reached through a private endpoint only (main.bicep vnetEnabled, network.bicep).')
@allowed([
  'Enabled'
  'Disabled'
])
param publicNetworkAccess string = 'Enabled'

// Without public access, nothing but the private endpoint (and trusted Azure services) gets in.
var networkDefaultAction = (publicNetworkAccess == 'Disabled') ? 'Deny' : 'Allow'

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  //checkov:skip=CKV_AZURE_109:The firewall default action is Deny when vnetEnabled=true (private endpoint). Without a VNet the Flex app reaches the vault over its public endpoint; access is RBAC-only and the app can read secrets only (Key Vault Secrets User).
  //checkov:skip=CKV_AZURE_189:Public network access is Disabled when vnetEnabled=true. Without a VNet the app and the operator importing the certificate need the public endpoint; every request still needs an Entra token and an RBAC role.
  name: name
  location: location
  tags: tags
  properties: {
    tenantId: subscription().tenantId
    sku: {
      family: 'A'
      name: 'standard'
    }
    enableRbacAuthorization: true
    enableSoftDelete: true
    softDeleteRetentionInDays: softDeleteRetentionInDays
    // Irreversible: a deleted vault can be recovered but not purged before the retention ends.
    // azd down --purge therefore leaves this vault soft-deleted (see docs/deploy.md, Tear down).
    enablePurgeProtection: true
    enabledForDeployment: false
    enabledForDiskEncryption: false
    enabledForTemplateDeployment: false
    publicNetworkAccess: publicNetworkAccess
    networkAcls: {
      bypass: 'AzureServices'
      defaultAction: networkDefaultAction
    }
  }
}

output id string = vault.id
output name string = vault.name
output uri string = vault.properties.vaultUri
