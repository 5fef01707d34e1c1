-- wrk script: each request carries the next of many distinct Bearer tokens (round robin), so
-- that authgate's verified-token cache cannot answer it. Requests are formatted once, in init,
-- to keep wrk's own per-request cost as low as with a fixed -H header.
-- usage: wrk ... -s rotate_tokens.lua URL -- TOKEN_FILE PATH
local reqs, n, i = {}, 0, 0

function init(args)
   for line in io.lines(args[1]) do
      if #line > 0 then
         n = n + 1
         reqs[n] = wrk.format("GET", args[2], { ["Authorization"] = "Bearer " .. line })
      end
   end
   assert(n > 0, "no tokens in " .. args[1])
end

function request()
   i = i % n + 1
   return reqs[i]
end
