// Log Analytics workspace and Application Insights, both with local (key) authentication off.
// The Function App sends telemetry with its managed identity (APPLICATIONINSIGHTS_AUTHENTICATION_STRING
// plus Monitoring Metrics Publisher on the component, see rbac.bicep).
//
// Module boundary for alerting: alert rules (failed runs, ingestion lag, dead letters) belong in
// this file and will use actionGroupId; they are added by a later change.

@description('Log Analytics workspace name.')
param logAnalyticsName string

@description('Application Insights component name.')
param appInsightsName string

@description('Azure region.')
param location string

@description('Tags for the resources.')
param tags object

@description('Days the workspace keeps data.')
@minValue(30)
@maxValue(730)
param retentionInDays int = 30

@description('Resource ID of an existing action group for alert rules; empty for none.')
param actionGroupId string = ''

resource workspace 'Microsoft.OperationalInsights/workspaces@2023-09-01' = {
  name: logAnalyticsName
  location: location
  tags: tags
  properties: {
    retentionInDays: retentionInDays
    sku: {
      name: 'PerGB2018'
    }
    features: {
      disableLocalAuth: true
    }
  }
}

resource appInsights 'Microsoft.Insights/components@2020-02-02' = {
  name: appInsightsName
  location: location
  tags: tags
  kind: 'web'
  properties: {
    Application_Type: 'web'
    WorkspaceResourceId: workspace.id
    DisableLocalAuth: true
    publicNetworkAccessForIngestion: 'Enabled'
    publicNetworkAccessForQuery: 'Enabled'
  }
}

// --- Alert rules go here (later change); they reference appInsights.id and actionGroupId.

output appInsightsId string = appInsights.id
output appInsightsName string = appInsights.name
// Not a secret: with local authentication off the instrumentation key in it cannot send data;
// every ingestion call needs an Entra token with Monitoring Metrics Publisher.
output connectionString string = appInsights.properties.ConnectionString
output workspaceId string = workspace.id
output actionGroupId string = actionGroupId
