// Alert rules and the operations workbook over the collector's metrics in Application Insights
// (customMetrics, written by azure-monitor-opentelemetry; see docs/operations.md). Each rule splits
// by tenant and stream where it can, so an alert names the stream that needs attention. The KQL
// lives in ./kql: the same files feed the workbook, and docs/operations.md shows them verbatim.

@description('Prefix of the rule names (the Application Insights component name).')
param namePrefix string

@description('Azure region.')
param location string

@description('Tags for the resources.')
param tags object

@description('Resource ID of the Application Insights component the rules query.')
param appInsightsId string

@description('Resource ID of an existing action group to notify; empty: the alerts fire without notifying anyone.')
param actionGroupId string = ''

@description('Alert when a live stream\'s watermark is older than this many minutes.')
@minValue(15)
param lagThresholdMinutes int = 120

@description('Alert when no live run at all was reported for this long (ISO 8601; at least 3 timer periods).')
@allowed([
  'PT15M'
  'PT30M'
  'PT45M'
  'PT1H'
  'PT2H'
  'PT6H'
])
param stalledWindow string = 'PT30M'

var actions = {
  actionGroups: empty(actionGroupId) ? [] : [
    actionGroupId
  ]
}
var perStream = [
  {
    name: 'tenant'
    operator: 'Include'
    values: [
      '*'
    ]
  }
  {
    name: 'stream'
    operator: 'Include'
    values: [
      '*'
    ]
  }
]
var once = {
  numberOfEvaluationPeriods: 1
  minFailingPeriodsToAlert: 1
}

resource lagAlert 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = {
  name: '${namePrefix}-watermark-lag'
  location: location
  tags: tags
  kind: 'LogAlert'
  properties: {
    displayName: 'o365ingest: stream behind'
    description: 'A live stream\'s watermark is older than the threshold: content is not being collected. Run `python -m o365ingest doctor`; see docs/operations.md.'
    severity: 2
    enabled: true
    scopes: [
      appInsightsId
    ]
    evaluationFrequency: 'PT15M'
    windowSize: 'PT1H'
    criteria: {
      allOf: [
        {
          query: loadTextContent('./kql/watermark-lag.kql')
          timeAggregation: 'Maximum'
          metricMeasureColumn: 'lagMinutes'
          dimensions: perStream
          operator: 'GreaterThan'
          threshold: lagThresholdMinutes
          failingPeriods: once
        }
      ]
    }
    autoMitigate: true
    actions: actions
  }
}

resource failedRunsAlert 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = {
  name: '${namePrefix}-failed-runs'
  location: location
  tags: tags
  kind: 'LogAlert'
  properties: {
    displayName: 'o365ingest: failed runs'
    description: 'A stream\'s run or a timer invocation failed. The run log and `python -m o365ingest doctor` name the cause and its remedy.'
    severity: 1
    enabled: true
    scopes: [
      appInsightsId
    ]
    evaluationFrequency: 'PT5M'
    windowSize: 'PT15M'
    criteria: {
      allOf: [
        {
          query: loadTextContent('./kql/alert-failed-runs.kql')
          timeAggregation: 'Total'
          metricMeasureColumn: 'failures'
          dimensions: perStream
          operator: 'GreaterThan'
          threshold: 0
          failingPeriods: once
        }
      ]
    }
    autoMitigate: true
    actions: actions
  }
}

resource lostDataAlert 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = {
  name: '${namePrefix}-abandoned-or-dead-lettered'
  location: location
  tags: tags
  kind: 'LogAlert'
  properties: {
    displayName: 'o365ingest: blobs abandoned or dead-lettered'
    description: 'Content was abandoned (expired, not found, rejected, older than the API keeps) or dead-lettered. References are in the dead-letter container; see docs/operations.md.'
    severity: 2
    enabled: true
    scopes: [
      appInsightsId
    ]
    evaluationFrequency: 'PT15M'
    windowSize: 'PT15M'
    criteria: {
      allOf: [
        {
          query: loadTextContent('./kql/alert-lost-data.kql')
          timeAggregation: 'Total'
          metricMeasureColumn: 'count'
          dimensions: concat(perStream, [
            {
              name: 'reason'
              operator: 'Include'
              values: [
                '*'
              ]
            }
          ])
          operator: 'GreaterThan'
          threshold: 0
          failingPeriods: once
        }
      ]
    }
    autoMitigate: false
    actions: actions
  }
}

resource stalledAlert 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = {
  name: '${namePrefix}-stalled'
  location: location
  tags: tags
  kind: 'LogAlert'
  properties: {
    displayName: 'o365ingest: no runs'
    description: 'No live run was reported in the window: the collector stopped silently (timer disabled, deployment broken, crash at start-up).'
    severity: 1
    enabled: true
    scopes: [
      appInsightsId
    ]
    evaluationFrequency: 'PT15M'
    windowSize: stalledWindow
    criteria: {
      allOf: [
        {
          query: loadTextContent('./kql/alert-stalled.kql')
          timeAggregation: 'Count'
          operator: 'LessThan'
          threshold: 1
          failingPeriods: once
        }
      ]
    }
    autoMitigate: true
    actions: actions
  }
}

var workbookQueries = [
  {
    name: 'lag'
    title: 'Watermark lag per stream (minutes)'
    query: loadTextContent('./kql/watermark-lag.kql')
    visualization: 'table'
  }
  {
    name: 'throughput'
    title: 'Records published per stream'
    query: loadTextContent('./kql/throughput.kql')
    visualization: 'timechart'
  }
  {
    name: 'errors'
    title: 'Errors per stream'
    query: loadTextContent('./kql/errors.kql')
    visualization: 'table'
  }
]
var workbookItems = [for item in workbookQueries: {
  type: 3
  name: item.name
  content: {
    version: 'KqlItem/1.0'
    title: item.title
    query: item.query
    size: 0
    timeContext: {
      durationMs: 86400000
    }
    queryType: 0
    resourceType: 'microsoft.insights/components'
    visualization: item.visualization
  }
}]
var workbook = {
  version: 'Notebook/1.0'
  items: concat([
    {
      type: 1
      name: 'intro'
      content: {
        json: '## o365ingest\nEvery stream\'s lag, throughput and errors over the last 24 hours. Queries and alert rules: docs/operations.md.'
      }
    }
  ], workbookItems)
  fallbackResourceIds: [
    appInsightsId
  ]
  '$schema': 'https://github.com/Microsoft/Application-Insights-Workbooks/blob/master/schema/workbook.json'
}

resource operationsWorkbook 'Microsoft.Insights/workbooks@2023-06-01' = {
  name: guid(appInsightsId, 'o365ingest-operations-workbook')
  location: location
  tags: tags
  kind: 'shared'
  properties: {
    displayName: 'o365ingest operations'
    category: 'workbook'
    sourceId: appInsightsId
    serializedData: string(workbook)
  }
}

output alertRuleNames array = [
  lagAlert.name
  failedRunsAlert.name
  lostDataAlert.name
  stalledAlert.name
]
output workbookId string = operationsWorkbook.id
