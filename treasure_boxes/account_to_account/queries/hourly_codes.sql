-- Requests per HTTP status code in the hour before the session: [last_session_time, session_time).
-- td> puts the session's times in before it sends the query.
SELECT
  code,
  COUNT(1) AS requests,
  SUM(size) AS bytes
FROM www_access
WHERE TD_TIME_RANGE(time, '${last_session_local_time}', '${session_local_time}', 'UTC')
GROUP BY code
