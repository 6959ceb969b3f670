-- The ten paths with the most page views. The file is sent as written: in the py> form nothing
-- replaces Digdag variables in it, so a time filter uses TD_SCHEDULED_TIME(), which the task sets
-- to the session's time, e.g. TD_INTERVAL(time, '-1d', NULL, TD_SCHEDULED_TIME()) on real TD.
SELECT
  path,
  COUNT(1) AS pageviews,
  COUNT(DISTINCT host) AS visitors
FROM www_access
GROUP BY path
ORDER BY pageviews DESC
LIMIT 10
