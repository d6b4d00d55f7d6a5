//! The store's append script, whose SHA-1 the raw append sends by `EVALSHA`.

/// A copy of the store's append script (`src/scripts.rs`: `LIVE` + `APPEND_KEYS` +
/// `APPEND`, as of commit 5ed984f), used for its SHA-1 only: the fixture checks
/// that the store loaded a script with this SHA-1 and fails if not, so a drift
/// from `src/scripts.rs` stops the bench (copy the three again).
pub const APPEND_SCRIPT: &str = r#"
local function live(exp, created, now, max_life)
  if exp == -2 then return false end
  if exp ~= -1 and exp <= now then return false end
  if max_life > 0 and created + max_life <= now then return false end
  return true
end
local function capped(now, ttl, created, max_life)
  local e = now + ttl
  if max_life > 0 and created + max_life < e then e = created + max_life end
  return e
end

local function recalled(rk, key)
  local hay = ' ' .. rk
  local s, e = string.find(hay, ' ' .. key .. ':', 1, true)
  if s == nil then return nil end
  local stop = string.find(hay, ' ', e + 1, true)
  if stop == nil then return nil end
  return string.sub(hay, e + 1, stop - 1)
end
local function remember(rk, key, id, keep)
  local list = key .. ':' .. id .. ' ' .. rk
  local pos = 0
  for i = 1, keep do
    pos = string.find(list, ' ', pos + 1, true)
    if pos == nil then return list end
  end
  return string.sub(list, 1, pos)
end
local function parse_id(text)
  local dash = string.find(text, '-', 1, true)
  if dash == nil then return nil end
  return tonumber(string.sub(text, 1, dash - 1)), tonumber(string.sub(text, dash + 1))
end

local now = tonumber(ARGV[1])
local max_life = tonumber(ARGV[5])
local exp = redis.call('PEXPIRETIME', KEYS[1])
if exp == -2 then return {'NOTFOUND'} end
local f = redis.call('HMGET', KEYS[1], 'created', 'lfid', 'rk', 'fc')
local created = tonumber(f[1])
if created == nil then return {'CORRUPT', 'created'} end
if not live(exp, created, now, max_life) then return {'NOTFOUND'} end
local lfid = f[2] or '0-0'
local last_ms, last_seq = parse_id(lfid)
if last_ms == nil or last_seq == nil then return {'CORRUPT', 'lfid'} end
local rk = f[3] or ''
local new_exp = string.format('%d', capped(now, tonumber(ARGV[4]), created, max_life))
local id = recalled(rk, ARGV[6])
if id ~= nil then
  redis.call('HSET', KEYS[1], 'last', ARGV[1])
  redis.call('PEXPIREAT', KEYS[1], new_exp)
  redis.call('PEXPIREAT', KEYS[2], new_exp)
  return {'OK', id, new_exp, f[4] or '0'}
end
if now > last_ms then
  id = string.format('%d-0', now)
else
  id = string.format('%d-%d', last_ms, last_seq + 1)
end
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], id, 'f', ARGV[2])
local fc = redis.call('HINCRBY', KEYS[1], 'fc', 1)
redis.call('HSET', KEYS[1], 'last', ARGV[1], 'lfid', id,
  'rk', remember(rk, ARGV[6], id, tonumber(ARGV[7])))
redis.call('PEXPIREAT', KEYS[1], new_exp)
redis.call('PEXPIREAT', KEYS[2], new_exp)
return {'OK', id, new_exp, fc}
"#;
