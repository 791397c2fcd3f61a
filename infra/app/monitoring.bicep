// Log Analytics workspace and Application Insights, both with local (key) authentication off.
// The Function App sends telemetry with its managed identity (APPLICATIONINSIGHTS_AUTHENTICATION_STRING
// plus Monitoring Metrics Publisher on the component, see rbac.bicep).
//
// Alert rules (stream behind, failed runs, abandoned or dead-lettered content, no runs at all) and
// the operations workbook are deployed from here by ./alerts.bicep, notifying actionGroupId if set.

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

@description('Alert when a live stream\'s watermark is older than this many minutes.')
@minValue(15)
param lagThresholdMinutes int = 120

@description('Alert when no live run was reported for this long (ISO 8601 duration).')
param stalledWindow string = 'PT30M'

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

module alerts './alerts.bicep' = {
  name: 'alerts'
  params: {
    namePrefix: appInsightsName
    location: location
    tags: tags
    appInsightsId: appInsights.id
    actionGroupId: actionGroupId
    lagThresholdMinutes: lagThresholdMinutes
    stalledWindow: stalledWindow
  }
}

output appInsightsId string = appInsights.id
output appInsightsName string = appInsights.name
// Not a secret: with local authentication off the instrumentation key in it cannot send data;
// every ingestion call needs an Entra token with Monitoring Metrics Publisher.
output connectionString string = appInsights.properties.ConnectionString
output workspaceId string = workspace.id
output actionGroupId string = actionGroupId
output alertRuleNames array = alerts.outputs.alertRuleNames
