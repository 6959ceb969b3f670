-- Requests and bytes per HTTP status code on the day before the session.
SELECT
  code,
  COUNT(1) AS requests,
  SUM(size) AS bytes
FROM www_access
WHERE TD_TIME_RANGE(time, '${last_session_date}', '${session_date}', 'UTC')
GROUP BY code
