-- POST the file named by $BODY with Content-Type $CONTENT_TYPE on every request:
--   BODY=img.png CONTENT_TYPE=image/png wrk -t1 -c8 -d10s --latency -s benchmarks/wrk/post.lua URL
wrk.method = "POST"
wrk.headers["Content-Type"] = os.getenv("CONTENT_TYPE") or "application/octet-stream"
local file = assert(io.open(assert(os.getenv("BODY"), "set BODY to the request body's file"), "rb"))
wrk.body = file:read("*a")
file:close()
