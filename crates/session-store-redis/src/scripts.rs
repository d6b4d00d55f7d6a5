//! The Lua scripts: the operations that need a condition checked atomically with
//! their writes (create-if-absent, revision check, append with counters and its
//! idempotency key, and the fallback write-back).
//!
//! Each script touches only `KEYS[1]` (meta) and `KEYS[2]` (frames), which share a
//! hash tag, so they run on a cluster. They reply with an array whose first element
//! is a status word (`OK`, `EXISTS`, `NOTFOUND`, `CONFLICT`, `CORRUPT`): a plain value
//! read the same way on every fred and RESP version, never a nil.
//! Numbers go back into Redis through `string.format('%d')` so Lua's float formatting
//! never reaches a stored field.

use fred::types::scripts::Script;

/// Liveness as every operation checks it: meta exists, its physical expiry is
/// after now, and the lifetime cap is after now. `max_life` 0 means no cap.
const LIVE: &str = r#"
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
"#;

/// The recent-append-keys list of the meta field `rk`: `"<key>:<id> "` entries,
/// newest first, at most `REMEMBERED_APPEND_KEYS` of them. Keys are letters and
/// digits, so the plain `find` below cannot be fooled by a separator.
const APPEND_KEYS: &str = r#"
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
"#;

/// KEYS: meta, frames. ARGV: now, expires_at, body, max_life, format version.
const CREATE: &str = r#"
local now = tonumber(ARGV[1])
local max_life = tonumber(ARGV[4])
local exp = redis.call('PEXPIRETIME', KEYS[1])
if exp ~= -2 then
  local created = tonumber(redis.call('HGET', KEYS[1], 'created'))
  if created == nil then return {'CORRUPT', 'created'} end
  if live(exp, created, now, max_life) then return {'EXISTS'} end
end
redis.call('DEL', KEYS[1], KEYS[2])
redis.call('HSET', KEYS[1], 'created', ARGV[1], 'last', ARGV[1], 'rev', '1', 'fc', '0',
  'lfid', '0-0', 'v', ARGV[5], 'body', ARGV[3])
redis.call('PEXPIREAT', KEYS[1], ARGV[2])
return {'OK'}
"#;

/// KEYS: meta, frames. ARGV: expected revision, now, body, ttl, max_life.
const UPDATE: &str = r#"
local now = tonumber(ARGV[2])
local max_life = tonumber(ARGV[5])
local exp = redis.call('PEXPIRETIME', KEYS[1])
if exp == -2 then return {'NOTFOUND'} end
local f = redis.call('HMGET', KEYS[1], 'created', 'rev', 'fc')
local created = tonumber(f[1])
local rev = tonumber(f[2])
if created == nil then return {'CORRUPT', 'created'} end
if rev == nil then return {'CORRUPT', 'rev'} end
if not live(exp, created, now, max_life) then return {'NOTFOUND'} end
if rev ~= tonumber(ARGV[1]) then return {'CONFLICT', string.format('%d', rev)} end
local new_exp = string.format('%d', capped(now, tonumber(ARGV[4]), created, max_life))
local new_rev = string.format('%d', rev + 1)
redis.call('HSET', KEYS[1], 'rev', new_rev, 'last', ARGV[2], 'body', ARGV[3])
redis.call('PEXPIREAT', KEYS[1], new_exp)
redis.call('PEXPIREAT', KEYS[2], new_exp)
return {'OK', f[1], f[3] or '0', new_rev, ARGV[2], new_exp}
"#;

/// KEYS: meta, frames. ARGV: now, encoded frame, max_frames, ttl, max_life, append
/// key, keys to remember.
/// The id follows `lfid`, not the stream's last entry, so it keeps increasing after
/// the frames were deleted. A key already in `rk` means this append was stored
/// before (its reply was lost): the stored id is returned and nothing is added.
const APPEND: &str = r#"
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

/// Write-back of a session served from memory while Redis was unreachable.
/// KEYS: meta, frames. ARGV: now, ttl, max_life, max_frames, format version,
/// base revision, local revision, updated (1/0), body, created, last activity,
/// frame count, expires_at, first chunk (1/0), keys to remember, count frames
/// (1/0), write-back key, then one (append key, frame id, encoded frame) triple
/// per frame, oldest first.
///
/// A session that is missing or expired is created from the arguments (Redis lost
/// it: restart without persistence). A live one keeps its fields unless the write-
/// back carries an update and Redis still holds the revision the update was based
/// on, or holds the update's own revision written by this same write-back (field
/// `wb` = the write-back key: a repeat after a lost reply); else Redis wins and the
/// reply carries its revision. Each frame is stored exactly once under the id
/// the client was given: it is skipped when Redis already holds an entry with
/// its id (an earlier attempt of this write-back stored it, however
/// many appends trimmed `rk` since; local ids carry an instance tag, so no other
/// frame has it), or is older than every entry of a full stream (stored before,
/// then trimmed by `max_frames_per_session`). A frame whose append key Redis
/// remembers under another id (the append reached Redis before the outage, its
/// reply was lost, and the caller was given the local id) is moved to the local
/// id (counted as already stored, not added to `fc`). A frame newer than the stream's last entry is appended; an
/// older one (another instance stored later frames meanwhile) is inserted in
/// place: the entries after it are taken out, the stream's last id set back
/// (`XSETID`) and they are added again after it, with their own ids (counted as
/// interleaved). `lfid` ends at least at the largest id handed out locally, so
/// later appends sort after every id a client has seen.
const RESTORE: &str = r#"
local now = tonumber(ARGV[1])
local max_life = tonumber(ARGV[3])
local exp = redis.call('PEXPIRETIME', KEYS[1])
local is_live = false
if exp ~= -2 then
  local created = tonumber(redis.call('HGET', KEYS[1], 'created'))
  if created == nil then return {'CORRUPT', 'created'} end
  is_live = live(exp, created, now, max_life)
end
local outcome = 'MERGED'
local conflict = ''
if not is_live then
  if ARGV[14] ~= '1' then return {'NOTFOUND'} end
  redis.call('DEL', KEYS[1], KEYS[2])
  redis.call('HSET', KEYS[1], 'created', ARGV[10], 'last', ARGV[11], 'rev', ARGV[7],
    'fc', ARGV[12], 'lfid', '0-0', 'v', ARGV[5], 'body', ARGV[9], 'wb', ARGV[17])
  outcome = 'RECREATED'
  exp = 0
elseif ARGV[14] == '1' and ARGV[8] == '1' then
  local rev = tonumber(redis.call('HGET', KEYS[1], 'rev'))
  if rev == nil then return {'CORRUPT', 'rev'} end
  local repeated = rev == tonumber(ARGV[7]) and redis.call('HGET', KEYS[1], 'wb') == ARGV[17]
  if rev == tonumber(ARGV[6]) or repeated then
    redis.call('HSET', KEYS[1], 'rev', ARGV[7], 'body', ARGV[9], 'wb', ARGV[17])
  else
    conflict = string.format('%d', rev)
  end
end
local f = redis.call('HMGET', KEYS[1], 'lfid', 'rk', 'last')
local last_ms, last_seq = parse_id(f[1] or '0-0')
if last_ms == nil or last_seq == nil then return {'CORRUPT', 'lfid'} end
local top_ms, top_seq = last_ms, last_seq
local rk = f[2] or ''
local added, skipped, interleaved = 0, 0, 0
local ids = {}
for i = 18, #ARGV, 3 do
  local key, wanted, body = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local ms, seq = parse_id(wanted)
  if ms == nil or seq == nil then return {'CORRUPT', 'frame id ' .. wanted} end
  if ms > top_ms or (ms == top_ms and seq > top_seq) then top_ms, top_seq = ms, seq end
  local stored = recalled(rk, key)
  local moved = false
  if #redis.call('XRANGE', KEYS[2], wanted, wanted) > 0 then
    stored = wanted
  elseif stored ~= nil then
    redis.call('XDEL', KEYS[2], stored)
    stored = nil
    moved = true
  end
  if stored == nil and not moved and redis.call('XLEN', KEYS[2]) >= tonumber(ARGV[4]) then
    local oldest = redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', 1)
    local oms, oseq = parse_id(oldest[1][1])
    if ms < oms or (ms == oms and seq < oseq) then stored = wanted end
  end
  if stored ~= nil then
    skipped = skipped + 1
  else
    stored = string.format('%d-%d', ms, seq)
    local newest = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)
    local tail = {}
    if #newest > 0 then
      local nms, nseq = parse_id(newest[1][1])
      if not (ms > nms or (ms == nms and seq > nseq)) then
        tail = redis.call('XRANGE', KEYS[2], '(' .. stored, '+')
        for _, entry in ipairs(tail) do redis.call('XDEL', KEYS[2], entry[1]) end
        interleaved = interleaved + 1
      end
    end
    if redis.call('EXISTS', KEYS[2]) == 1 then
      local before = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)
      local floor = '0-1'
      if #before > 0 then floor = before[1][1] end
      redis.call('XSETID', KEYS[2], floor)
    end
    redis.call('XADD', KEYS[2], stored, 'f', body)
    for _, entry in ipairs(tail) do redis.call('XADD', KEYS[2], entry[1], unpack(entry[2])) end
    redis.call('XTRIM', KEYS[2], 'MAXLEN', '~', ARGV[4])
    rk = remember(rk, key, stored, tonumber(ARGV[15]))
    if moved then skipped = skipped + 1 else added = added + 1 end
  end
  table.insert(ids, stored)
end
local last = tonumber(f[3]) or 0
if tonumber(ARGV[11]) > last then last = tonumber(ARGV[11]) end
if outcome == 'MERGED' and ARGV[16] == '1' then redis.call('HINCRBY', KEYS[1], 'fc', added) end
redis.call('HSET', KEYS[1], 'last', string.format('%d', last), 'rk', rk,
  'lfid', string.format('%d-%d', top_ms, top_seq))
local new_exp = tonumber(ARGV[13])
if exp > new_exp then new_exp = exp end
new_exp = string.format('%d', new_exp)
redis.call('PEXPIREAT', KEYS[1], new_exp)
redis.call('PEXPIREAT', KEYS[2], new_exp)
return {outcome, conflict, added, skipped, interleaved, new_exp, ids}
"#;

/// A script with its source (for `EVAL` after `NOSCRIPT`) and SHA-1 (for `EVALSHA`).
#[derive(Clone, Debug)]
pub(crate) struct StoreScript {
    /// Used in error messages and logs.
    pub(crate) name: &'static str,
    pub(crate) script: Script,
}

impl StoreScript {
    fn new(name: &'static str, body: &str) -> Self {
        StoreScript {
            name,
            script: Script::from_lua(format!("{LIVE}{APPEND_KEYS}{body}")),
        }
    }

    pub(crate) fn sha1(&self) -> &str {
        self.script.sha1()
    }

    pub(crate) fn lua(&self) -> &str {
        self.script.lua().map_or("", |lua| lua)
    }
}

/// The store's scripts, built once per store.
#[derive(Clone, Debug)]
pub(crate) struct Scripts {
    pub(crate) create: StoreScript,
    pub(crate) update: StoreScript,
    pub(crate) append: StoreScript,
    pub(crate) restore: StoreScript,
}

impl Scripts {
    pub(crate) fn new() -> Self {
        Scripts {
            create: StoreScript::new("create", CREATE),
            update: StoreScript::new("update", UPDATE),
            append: StoreScript::new("append", APPEND),
            restore: StoreScript::new("restore", RESTORE),
        }
    }

    pub(crate) fn all(&self) -> [&StoreScript; 4] {
        [&self.create, &self.update, &self.append, &self.restore]
    }
}
