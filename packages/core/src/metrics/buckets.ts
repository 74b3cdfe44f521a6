/** Upper bounds (s) of build durations: the histogram's buckets and the dashboard's percentiles. */
export const BUILD_DURATION_BUCKETS = [1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1200, 1800, 3600] as const;
