-- Page views per path from the start of the data up to the session's day: the state to snapshot.
SELECT
  path,
  COUNT(1) AS pageviews,
  COUNT(DISTINCT host) AS visitors
FROM www_access
WHERE TD_TIME_RANGE(time, NULL, '${session_date}', 'UTC')
GROUP BY path
