-- Requests per HTTP status code over the whole sample (a daily job would filter with
-- TD_TIME_RANGE(time, '${session_date}', TD_TIME_ADD('${session_date}', '1d'))).
SELECT
  code,
  COUNT(1) AS requests,
  SUM(size) AS bytes,
  TD_TIME_FORMAT(MAX(time), 'yyyy-MM-dd HH:mm:ss', 'UTC') AS last_seen
FROM www_access
GROUP BY code
ORDER BY code
