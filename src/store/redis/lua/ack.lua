-- Ack: acknowledges outbox records the ledger has, and deletes them, if the partition is still
-- in the epoch they were written in. Once Redis lost its keys, a new stream may reuse the ids of
-- the lost one's records: acknowledging those would drop records the ledger never had.
--
-- KEYS[1] partition outbox stream   KEYS[2] partition epoch
-- ARGV[1] consumer group   ARGV[2] the records' epoch ('' for records written before epochs)
-- ARGV[3..] stream ids
-- Reply: {number of records deleted}
if ARGV[2] ~= '' and redis.call('GET', KEYS[2]) ~= ARGV[2] then
  return { '0' }
end
local ids = {}
for i = 3, #ARGV do
  ids[#ids + 1] = ARGV[i]
end
if #ids == 0 then
  return { '0' }
end
-- Acknowledged first: a record deleted but not acknowledged would stay pending. A stream whose
-- group is being made again has nothing pending to acknowledge.
redis.pcall('XACK', KEYS[1], ARGV[1], unpack(ids))
return { tostring(redis.call('XDEL', KEYS[1], unpack(ids))) }
