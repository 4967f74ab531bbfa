-- Batch: runs operations of one partition in one call (reserve, commit, release, extend,
-- charge), in the order given, each as its own script would alone, and appends their outbox
-- records when all have run: one record per account, with that account's entries in order. An
-- operation's error is its own answer; the others still run.
--
-- KEYS[1] the partition's outbox stream (which routes the call in a Cluster: every key an
-- operation touches shares its hash tag)
-- ARGV[1] number of operations, then for each: its name, its number of keys, its number of
--         arguments, its keys, its arguments (as its own script takes them)
-- Reply: {records, answer, answer, …}: records is {position, entries, position, entries, …},
--        one pair per record appended; an answer is {number of the operation's record (from 1,
--        '0' for none), the operation's own reply…}, or {'0', 'error', message}.
local args = ARGV
local count = minor(args[1], 'operation count')
local answers = {}
local at = 2
begin_batch()
for i = 1, count do
  local run = BATCHED[args[at]]
  if run == nil then
    error('creditgate: a batch cannot run ' .. tostring(args[at]))
  end
  local key_count = minor(args[at + 1], 'key count')
  local arg_count = minor(args[at + 2], 'argument count')
  local op_keys, op_args = {}, {}
  at = at + 3
  for k = 1, key_count do
    op_keys[k] = args[at + k - 1]
  end
  at = at + key_count
  for a = 1, arg_count do
    op_args[a] = args[at + a - 1]
  end
  at = at + arg_count
  KEYS, ARGV = op_keys, op_args
  batch_op(i)
  local ok, reply = pcall(run)
  if ok then
    table.insert(reply, 1, batch_record_of(i))
    answers[i + 1] = reply
  else
    -- An error raised by redis.call is a table with its message in `err`.
    local message = type(reply) == 'table' and reply.err or reply
    answers[i + 1] = { '0', 'error', tostring(message) }
  end
end
answers[1] = end_batch()
return answers
