export {
  BUILD_HISTOGRAMS,
  type FinishedBuildTimes,
  metricProjectsKey,
  OTHER_PROJECTS,
  observeExport,
  observeFinishedBuild,
  projectLabel,
} from './build-metrics.js';
export {
  bucketIndex,
  type HistogramSeries,
  type HistogramSpec,
  metricHistogramsKey,
  type Observation,
  observeHistograms,
  readHistograms,
} from './histograms.js';
export {
  bucketQuantile,
  countMinute,
  type MinuteStats,
  minuteStatsKey,
  type OperatorMinute,
  type ProjectTotals,
  readMinuteStats,
  readOperatorStats,
  recordSample,
  type ServiceSample,
} from './minute-stats.js';
