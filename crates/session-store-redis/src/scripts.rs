//! The three Lua scripts: the operations that need a condition checked atomically
//! with their writes (create-if-absent, revision check, append with counters).
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

/// KEYS: meta, frames. ARGV: now, encoded frame, max_frames, ttl, max_life.
/// The id follows `lfid`, not the stream's last entry, so it keeps increasing after
/// the frames were deleted.
const APPEND: &str = r#"
local now = tonumber(ARGV[1])
local max_life = tonumber(ARGV[5])
local exp = redis.call('PEXPIRETIME', KEYS[1])
if exp == -2 then return {'NOTFOUND'} end
local f = redis.call('HMGET', KEYS[1], 'created', 'lfid')
local created = tonumber(f[1])
if created == nil then return {'CORRUPT', 'created'} end
if not live(exp, created, now, max_life) then return {'NOTFOUND'} end
local lfid = f[2] or '0-0'
local dash = string.find(lfid, '-', 1, true)
if dash == nil then return {'CORRUPT', 'lfid'} end
local last_ms = tonumber(string.sub(lfid, 1, dash - 1))
local last_seq = tonumber(string.sub(lfid, dash + 1))
if last_ms == nil or last_seq == nil then return {'CORRUPT', 'lfid'} end
local id
if now > last_ms then
  id = string.format('%d-0', now)
else
  id = string.format('%d-%d', last_ms, last_seq + 1)
end
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], id, 'f', ARGV[2])
local fc = redis.call('HINCRBY', KEYS[1], 'fc', 1)
redis.call('HSET', KEYS[1], 'last', ARGV[1], 'lfid', id)
local new_exp = string.format('%d', capped(now, tonumber(ARGV[4]), created, max_life))
redis.call('PEXPIREAT', KEYS[1], new_exp)
redis.call('PEXPIREAT', KEYS[2], new_exp)
return {'OK', id, new_exp, fc}
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
            script: Script::from_lua(format!("{LIVE}{body}")),
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
}

impl Scripts {
    pub(crate) fn new() -> Self {
        Scripts {
            create: StoreScript::new("create", CREATE),
            update: StoreScript::new("update", UPDATE),
            append: StoreScript::new("append", APPEND),
        }
    }

    pub(crate) fn all(&self) -> [&StoreScript; 3] {
        [&self.create, &self.update, &self.append]
    }
}
