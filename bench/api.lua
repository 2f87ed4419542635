-- wrk script for the API cell: each request renews a different eligible card from CARDS_FILE
-- ("userId,cardNo" lines, the cards a batch run on a copy of the same data reissued), thread i
-- taking every THREADS-th line from line i.
local threads = {}

function setup(thread)
  thread:set("id", #threads)
  table.insert(threads, thread)
end

function init(args)
  cards = {}
  for line in io.lines(os.getenv("CARDS_FILE")) do
    table.insert(cards, line)
  end
  step = tonumber(os.getenv("THREADS"))
  idx = id + 1
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
  wrk.headers["X-Api-Key"] = os.getenv("API_KEY")
end

function request()
  local line = cards[idx] or cards[1]
  idx = idx + step
  local user, card = line:match("([^,]+),([^,]+)")
  local body = string.format(
    '{"userInfo":{"userId":%s},"cardInfo":{"oldCardNo":"%s"},' ..
    '"addressInfo":{"address":"77 Teheran-ro, Seoul","addressDetail":"5F","zipCode":"06164"}}',
    user, card)
  return wrk.format(nil, "/api/v1/prepay-card/expired/reissue", nil, body)
end
