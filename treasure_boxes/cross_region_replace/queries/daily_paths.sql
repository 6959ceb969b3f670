-- Page views and visitors per path on the day before the session: [last_session_date, session_date).
SELECT
  path,
  COUNT(1) AS pageviews,
  COUNT(DISTINCT host) AS visitors
FROM www_access
WHERE TD_TIME_RANGE(time, '${last_session_date}', '${session_date}', 'UTC')
GROUP BY path
