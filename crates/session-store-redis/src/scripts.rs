//! The Lua scripts: the operations that need a condition checked atomically with
//! their writes (create-if-absent, revision check, append with counters and its
//! idempotency key and frame budget, a page read with its trim marker, and the
//! fallback write-back).
//!
//! Each session script touches only `KEYS[1]` (meta) and `KEYS[2]` (frames), which
//! share a hash tag, and each kv script one key, so they run on a cluster. They reply with an array whose first element
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

/// Long meta values in chunks of at most 64 bytes (Redis's default
/// `hash-max-listpack-value`), so the meta hash keeps its compact listpack
/// encoding: field `<first>` holds the first chunk, `<prefix>2`..`<prefix>N`
/// the rest and `<prefix>n` = N when N > 1. The `body` is chunked as `body`,
/// `b2`..`bN`, `bn`; the append keys as `rk`, `k2`..`kN`, `kn`. `chunk_fields`
/// returns the field/value pairs for one `HSET`; `drop_chunk_fields` removes
/// the chunks (and the count) an older, longer value left; `joined` reads a
/// value back from its first chunk and count (already read) and the rest.
const BODY: &str = r#"
local function chunk_fields(value, first, prefix)
  local n = math.max(1, math.ceil(#value / 64))
  local out = {first, string.sub(value, 1, 64)}
  for i = 2, n do
    out[#out + 1] = prefix .. string.format('%d', i)
    out[#out + 1] = string.sub(value, (i - 1) * 64 + 1, i * 64)
  end
  if n > 1 then
    out[#out + 1] = prefix .. 'n'
    out[#out + 1] = string.format('%d', n)
  end
  return out, n
end
local function drop_chunk_fields(key, prefix, n, old_n)
  if old_n <= n then return end
  local stale = {}
  if n == 1 then stale[1] = prefix .. 'n' end
  for i = n + 1, old_n do stale[#stale + 1] = prefix .. string.format('%d', i) end
  redis.call('HDEL', key, unpack(stale))
end
local function joined(key, prefix, head, count)
  local n = tonumber(count) or 1
  local value = head or ''
  if n > 1 then
    local names = {}
    for i = 2, n do names[#names + 1] = prefix .. string.format('%d', i) end
    for _, part in ipairs(redis.call('HMGET', key, unpack(names))) do
      if part then value = value .. part end
    end
  end
  return value, n
end
local function body_fields(body)
  return chunk_fields(body, 'body', 'b')
end
local function drop_chunks(key, n, old_n)
  drop_chunk_fields(key, 'b', n, old_n)
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
local function keys_fields(key, rk, old_n)
  local out, n = chunk_fields(rk, 'rk', 'k')
  drop_chunk_fields(key, 'k', n, old_n)
  return out
end
local function parse_id(text)
  local dash = string.find(text, '-', 1, true)
  if dash == nil then return nil end
  return tonumber(string.sub(text, 1, dash - 1)), tonumber(string.sub(text, dash + 1))
end
"#;

/// The tombstone `P:{<id>}:gone` a delete leaves for one ttl, as
/// `<delete key>:<covers>:<removed>`: the delete that wrote it, the newest
/// `created` (ms) of the incarnations it deleted, and `1` when it removed a
/// live session (its repeat answers `true`), else `0`. Every incarnation
/// created at or before `covers` stays deleted: a create issued before the
/// delete (`now < covers`) or a write-back of such a session (`created <=
/// covers`) that reaches Redis after it is refused. The older two-part value
/// `<delete key>:<created>` reads as `covers = created`, removed. `tombstone`
/// returns the three parts (nil when there is none); `covered_since` whether
/// a tombstone covers `created`.
const TOMBSTONE: &str = r#"
local function tombstone(value)
  if not value then return nil end
  local a = string.find(value, ':', 1, true)
  if a == nil then return nil end
  local rest = string.sub(value, a + 1)
  local b = string.find(rest, ':', 1, true)
  if b == nil then return string.sub(value, 1, a - 1), tonumber(rest), '1' end
  return string.sub(value, 1, a - 1), tonumber(string.sub(rest, 1, b - 1)), string.sub(rest, b + 1)
end
local function covered(gone, created)
  local _, covers = tombstone(redis.call('GET', gone))
  return covers ~= nil and created <= covers
end
"#;

/// The frame budget: bytes of a stream entry (its field values: the encoded
/// frame), and the trim that keeps a stream within `max_frames_per_session`
/// and `max_session_frame_bytes`. The meta field `fb` counts the bytes stored,
/// so an append trims only when over a limit and reads only the entries it
/// removes (amortised O(1) per append); `tid` is the newest id ever trimmed or
/// deleted, the marker a replay compares its cursor with to tell a gap.
/// `trim_frames` returns the bytes left and the newest id it removed (nil when
/// none), for the caller's `HSET`; `added` is the bytes of the entry just
/// added, all that is left when the stream holds one entry.
const FRAME_BUDGET: &str = r#"
local function entry_bytes(entry)
  local n = 0
  local fields = entry[2]
  for i = 2, #fields, 2 do n = n + #fields[i] end
  return n
end
local function trim_frames(frames, max_frames, max_bytes, fb, added)
  local len = redis.call('XLEN', frames)
  local last_removed = nil
  while len > 1 and (len > max_frames or fb > max_bytes) do
    local want = len - max_frames
    if want < 1 then want = 1 end
    if want > 100 then want = 100 end
    local oldest = redis.call('XRANGE', frames, '-', '+', 'COUNT', want)
    if #oldest == 0 then break end
    local doomed = {}
    for _, entry in ipairs(oldest) do
      if len <= 1 or (len <= max_frames and fb <= max_bytes) then break end
      fb = fb - entry_bytes(entry)
      len = len - 1
      last_removed = entry[1]
      table.insert(doomed, entry[1])
    end
    if #doomed == 0 then break end
    redis.call('XDEL', frames, unpack(doomed))
  end
  if len <= 1 then fb = added end
  if fb < 0 then fb = 0 end
  return fb, last_removed
end
"#;

/// KEYS: meta, frames, tombstone. ARGV: now, expires_at, body, max_life, format
/// version, create key.
/// A live session created by this same call (field `ck` = the create key: the
/// reply of a first attempt was lost) answers `OK` again, so the call is safe to
/// re-send; any other live session is `EXISTS`. A deleted id may be reused, but
/// not by a create issued before the delete (`now` below the tombstone's
/// `covers`: a create whose caller gave up, reaching Redis late): `DELETED`.
/// The tombstone stays, so a late write-back of the deleted incarnation is still
/// refused.
const CREATE: &str = r#"
local now = tonumber(ARGV[1])
local max_life = tonumber(ARGV[4])
local exp = redis.call('PEXPIRETIME', KEYS[1])
if exp ~= -2 then
  local f = redis.call('HMGET', KEYS[1], 'created', 'ck')
  local created = tonumber(f[1])
  if created == nil then return {'CORRUPT', 'created'} end
  if live(exp, created, now, max_life) then
    if f[2] == ARGV[6] then return {'OK'} end
    return {'EXISTS'}
  end
end
local _, covers = tombstone(redis.call('GET', KEYS[3]))
if covers ~= nil and now < covers then return {'DELETED'} end
redis.call('UNLINK', KEYS[1], KEYS[2])
redis.call('HSET', KEYS[1], 'created', ARGV[1], 'last', ARGV[1], 'rev', '1', 'fc', '0',
  'lfid', '0-0', 'v', ARGV[5], 'ck', ARGV[6], unpack((body_fields(ARGV[3]))))
redis.call('PEXPIREAT', KEYS[1], ARGV[2])
return {'OK'}
"#;

/// KEYS: meta, frames. ARGV: expected revision, now, body, ttl, max_life, update
/// key.
/// A revision one past the expected one written by this same call (field `uk` =
/// the update key: the reply of a first attempt was lost) answers `OK` with the
/// stored values again instead of `CONFLICT`, so the call is safe to re-send.
const UPDATE: &str = r#"
local now = tonumber(ARGV[2])
local max_life = tonumber(ARGV[5])
local exp = redis.call('PEXPIRETIME', KEYS[1])
if exp == -2 then return {'NOTFOUND'} end
local f = redis.call('HMGET', KEYS[1], 'created', 'rev', 'fc', 'uk', 'last', 'bn')
local created = tonumber(f[1])
local rev = tonumber(f[2])
if created == nil then return {'CORRUPT', 'created'} end
if rev == nil then return {'CORRUPT', 'rev'} end
if not live(exp, created, now, max_life) then return {'NOTFOUND'} end
if rev == tonumber(ARGV[1]) + 1 and f[4] == ARGV[6] then
  return {'OK', f[1], f[3] or '0', f[2], f[5] or ARGV[2], string.format('%d', exp)}
end
if rev ~= tonumber(ARGV[1]) then return {'CONFLICT', string.format('%d', rev)} end
local new_exp = string.format('%d', capped(now, tonumber(ARGV[4]), created, max_life))
local new_rev = string.format('%d', rev + 1)
local body, n = body_fields(ARGV[3])
redis.call('HSET', KEYS[1], 'rev', new_rev, 'last', ARGV[2], 'uk', ARGV[6], unpack(body))
drop_chunks(KEYS[1], n, tonumber(f[6]) or 1)
redis.call('PEXPIREAT', KEYS[1], new_exp)
redis.call('PEXPIREAT', KEYS[2], new_exp)
return {'OK', f[1], f[3] or '0', new_rev, ARGV[2], new_exp}
"#;

/// KEYS: meta, frames, tombstone. ARGV: now, max_life, delete key, tombstone
/// ms, covers (empty: every incarnation created until `now`; else the newest
/// `created`, ms, this delete removes: a fallback replacing an older
/// incarnation with one it created during an outage).
/// Checks liveness and removes the session in one step, so a delete racing
/// another delete, a touch or an append never sees half a session. Always
/// leaves the tombstone (see `TOMBSTONE`), also when Redis holds no session
/// (it may be in a fallback's journal, or a create or write-back of it may
/// still be on its way), with `covers` the largest of the given bound, the
/// removed session's `created` and the covers of a tombstone already there.
/// A repeat of this call (its reply was lost: the tombstone names its key)
/// answers as the first did and removes nothing (not a later incarnation).
/// A session created after `covers` is left alone. Replies `{1}` when a live
/// session was removed, else `{0}`.
const DELETE: &str = r#"
local now = tonumber(ARGV[1])
local max_life = tonumber(ARGV[2])
local key, covers, removed = tombstone(redis.call('GET', KEYS[3]))
if key == ARGV[3] then
  if removed == '1' then return {1} end
  return {0}
end
local bound = now
local bounded = ARGV[5] ~= nil and ARGV[5] ~= ''
if bounded then bound = tonumber(ARGV[5]) end
local exp = redis.call('PEXPIRETIME', KEYS[1])
local created = nil
if exp ~= -2 then created = tonumber(redis.call('HGET', KEYS[1], 'created')) end
local was_live = false
if exp == -2 then
  redis.call('UNLINK', KEYS[2])
elseif not (bounded and created ~= nil and created > bound) then
  was_live = created ~= nil and live(exp, created, now, max_life)
  redis.call('UNLINK', KEYS[1], KEYS[2])
  if created ~= nil and created > bound then bound = created end
end
if covers ~= nil and covers > bound then bound = covers end
if was_live or key == nil then
  key = ARGV[3]
  removed = was_live and '1' or '0'
end
redis.call('SET', KEYS[3], key .. ':' .. string.format('%d', bound) .. ':' .. removed, 'PX', ARGV[4])
if was_live then return {1} end
return {0}
"#;

/// KEYS: meta, frames. ARGV: now, max_life, the `created` the caller saw when it
/// found the session not live (empty when it did not read one).
/// Check-then-delete of one session for purge, list and touch clean-up, in one
/// step: a session created again after the caller's check (another `created`)
/// is deleted only if it is not live either; the one the caller found not live
/// is deleted even if a touch slid its physical expiry meanwhile.
/// Replies `{'REMOVED'}` (its keys are gone now), `{'GONE'}` (meta was already
/// missing) or `{'LIVE', pexpiretime, created}`.
const REAP: &str = r#"
local now = tonumber(ARGV[1])
local max_life = tonumber(ARGV[2])
local exp = redis.call('PEXPIRETIME', KEYS[1])
if exp == -2 then
  redis.call('UNLINK', KEYS[2])
  return {'GONE'}
end
local created = tonumber(redis.call('HGET', KEYS[1], 'created'))
if created == nil then return {'CORRUPT', 'created'} end
if created ~= tonumber(ARGV[3]) and live(exp, created, now, max_life) then
  return {'LIVE', string.format('%d', exp), string.format('%d', created)}
end
redis.call('UNLINK', KEYS[1], KEYS[2])
return {'REMOVED'}
"#;

/// KEYS: meta. The liveness probe's two values read in one step:
/// `{pexpiretime, created or false}`. Used only when the plain-command probe saw
/// a session change between its two commands.
const PROBE: &str = r#"
local exp = redis.call('PEXPIRETIME', KEYS[1])
local created = redis.call('HGET', KEYS[1], 'created')
return {exp, created}
"#;

/// KEYS: meta. A session read in one command: `{pexpiretime}` when the key is
/// missing, else `{pexpiretime, {name, value, ...}}` with only the fields a
/// session is built from (`created`, `last`, `rev`, `fc`, `bn`, `body`,
/// `b2`..`bN`), those present: not the append keys (`rk`...) and the other
/// bookkeeping a meta hash holds (47 fields for a session with frames), which
/// the client would parse for nothing. `bn` above 4096 is not followed (the
/// client reports the first chunk missing).
const GET: &str = r#"
local exp = redis.call('PEXPIRETIME', KEYS[1])
if exp == -2 then return {exp} end
local names = {'created', 'last', 'rev', 'fc', 'bn', 'body'}
local values = redis.call('HMGET', KEYS[1], unpack(names))
local chunks = math.min(tonumber(values[5]) or 1, 4096)
if chunks > 1 then
  for i = 2, chunks do names[5 + i] = 'b' .. i end
  local rest = redis.call('HMGET', KEYS[1], unpack(names, 7))
  for i = 1, #rest do values[6 + i] = rest[i] end
end
local found = {}
for i = 1, #names do
  if values[i] then
    found[#found + 1] = names[i]
    found[#found + 1] = values[i]
  end
end
return {exp, found}
"#;

/// KEYS: meta, frames. ARGV: now, ttl, max_life.
/// Slides a live session's expiry to `min(now + ttl, created + max_life)` in
/// one command: no read travels to the client before the write. `created` is
/// read only when there is a lifetime cap. Replies `{'OK'}`, `{'NOTFOUND'}`
/// (missing) or `{'EXPIRED', created when read}` (present but not live at
/// `now`: left as it is, for the caller to reap).
const TOUCH: &str = r#"
local now = tonumber(ARGV[1])
local max_life = tonumber(ARGV[3])
local exp = redis.call('PEXPIRETIME', KEYS[1])
if exp == -2 then return {'NOTFOUND'} end
local created = 0
local seen = {'EXPIRED'}
if max_life > 0 then
  created = tonumber(redis.call('HGET', KEYS[1], 'created'))
  if created == nil then return {'CORRUPT', 'created'} end
  seen[2] = string.format('%d', created)
end
if not live(exp, created, now, max_life) then return seen end
local new_exp = string.format('%d', capped(now, tonumber(ARGV[2]), created, max_life))
redis.call('PEXPIREAT', KEYS[1], new_exp)
redis.call('PEXPIREAT', KEYS[2], new_exp)
return {'OK'}
"#;

/// KEYS: meta, frames. ARGV: now, max_life, delete key.
/// Removes the frames of a live session; the count removed is remembered with
/// the key (field `dk`), so a repeat of this call answers the same count. The
/// newest removed id becomes `tid` (a replay after it reports the gap).
const DELETE_FRAMES: &str = r#"
local now = tonumber(ARGV[1])
local max_life = tonumber(ARGV[2])
local exp = redis.call('PEXPIRETIME', KEYS[1])
if exp == -2 then return {'NOTFOUND'} end
local f = redis.call('HMGET', KEYS[1], 'created', 'dk')
local created = tonumber(f[1])
if created == nil then return {'CORRUPT', 'created'} end
if not live(exp, created, now, max_life) then return {'NOTFOUND'} end
local done = f[2] or ''
local prefix = ARGV[3] .. ':'
if string.sub(done, 1, #prefix) == prefix then
  return {'OK', string.sub(done, #prefix + 1)}
end
local n = redis.call('XLEN', KEYS[2])
if n > 0 then
  local newest = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)
  if #newest > 0 then redis.call('HSET', KEYS[1], 'tid', newest[1][1]) end
end
redis.call('UNLINK', KEYS[2])
redis.call('HSET', KEYS[1], 'dk', prefix .. string.format('%d', n), 'fb', '0')
return {'OK', string.format('%d', n)}
"#;

/// KEYS: meta, frames. ARGV: now, max_frames, ttl, max_life, keys to remember,
/// max_session_frame_bytes, then one (append key, encoded frame) pair per frame,
/// oldest first (at least one).
/// Appends the batch: each frame's id follows `lfid` (not the stream's last
/// entry, so ids keep increasing after the frames were deleted), all in this
/// call's millisecond (`<now>-0`, `<now>-1`, ... or after `lfid` when the clock is
/// behind it); `fc` grows by the batch's length, `fb` by its bytes; one trim
/// after the batch leaves what trimming frame by frame would (the newest frame
/// kept), with `tid` the newest id removed. Every frame's key is remembered in
/// `rk`. The last frame's key already in `rk` means this batch was stored
/// before (its reply was lost; the script is atomic, so all of it): its ids,
/// consecutive in one millisecond, are returned and nothing is added.
/// Replies `{'OK', expires_at, fc, {ids}}`.
const APPEND: &str = r#"
local now = tonumber(ARGV[1])
local max_life = tonumber(ARGV[4])
local n = (#ARGV - 6) / 2
local exp = redis.call('PEXPIRETIME', KEYS[1])
if exp == -2 then return {'NOTFOUND'} end
local f = redis.call('HMGET', KEYS[1], 'created', 'lfid', 'rk', 'fc', 'fb', 'kn')
local created = tonumber(f[1])
if created == nil then return {'CORRUPT', 'created'} end
if not live(exp, created, now, max_life) then return {'NOTFOUND'} end
local last_ms, last_seq = parse_id(f[2] or '0-0')
if last_ms == nil or last_seq == nil then return {'CORRUPT', 'lfid'} end
local rk, rk_chunks = joined(KEYS[1], 'k', f[3], f[6])
local new_exp = string.format('%d', capped(now, tonumber(ARGV[3]), created, max_life))
local ids = {}
local seen = recalled(rk, ARGV[5 + 2 * n])
if seen ~= nil then
  local ms, seq = parse_id(seen)
  if ms == nil or seq == nil then return {'CORRUPT', 'rk'} end
  for i = 1, n do ids[i] = string.format('%d-%d', ms, seq - n + i) end
  redis.call('HSET', KEYS[1], 'last', ARGV[1])
  redis.call('PEXPIREAT', KEYS[1], new_exp)
  redis.call('PEXPIREAT', KEYS[2], new_exp)
  return {'OK', new_exp, f[4] or '0', ids}
end
local keep = tonumber(ARGV[5])
local fb = tonumber(f[5]) or 0
for i = 1, n do
  local body = ARGV[6 + 2 * i]
  if now > last_ms then
    last_ms = now
    last_seq = 0
  else
    last_seq = last_seq + 1
  end
  local id = string.format('%d-%d', last_ms, last_seq)
  redis.call('XADD', KEYS[2], id, 'f', body)
  fb = fb + #body
  rk = remember(rk, ARGV[5 + 2 * i], id, keep)
  ids[i] = id
end
local removed
fb, removed = trim_frames(KEYS[2], tonumber(ARGV[2]), tonumber(ARGV[6]), fb, #ARGV[6 + 2 * n])
local fc = redis.call('HINCRBY', KEYS[1], 'fc', n)
local fields = keys_fields(KEYS[1], rk, rk_chunks)
for _, v in ipairs({'last', ARGV[1], 'lfid', ids[n], 'fb', string.format('%d', fb)}) do
  fields[#fields + 1] = v
end
if removed ~= nil then
  fields[#fields + 1] = 'tid'
  fields[#fields + 1] = removed
end
redis.call('HSET', KEYS[1], unpack(fields))
redis.call('PEXPIREAT', KEYS[1], new_exp)
redis.call('PEXPIREAT', KEYS[2], new_exp)
return {'OK', new_exp, fc, ids}
"#;

/// KEYS: meta, frames. ARGV: start (`-` or `(<id>`), most entries, most bytes.
/// One page of entries as `XRANGE` returns them, read in small steps so no
/// more than about `max_read_bytes` is read (at least one entry when there is
/// one), with the trim marker `tid` read in the same step: `{tid, entries}`.
/// Liveness is the caller's (probe in the same batch).
const READ_PAGE: &str = r#"
local limit = tonumber(ARGV[2])
local budget = tonumber(ARGV[3])
local tid = redis.call('HGET', KEYS[1], 'tid') or '0-0'
local out = {}
local bytes = 0
local start = ARGV[1]
while #out < limit do
  local want = limit - #out
  if want > 16 then want = 16 end
  local chunk = redis.call('XRANGE', KEYS[2], start, '+', 'COUNT', want)
  for _, entry in ipairs(chunk) do
    local size = entry_bytes(entry)
    if #out > 0 and bytes + size > budget then return {tid, out} end
    bytes = bytes + size
    table.insert(out, entry)
  end
  if #chunk < want then break end
  start = '(' .. chunk[#chunk][1]
end
return {tid, out}
"#;

/// Write-back of a session served from memory while Redis was unreachable.
/// KEYS: meta, frames, tombstone. ARGV: now, ttl, max_life, max_frames, format version,
/// base revision, local revision, updated (1/0), body, created, last activity,
/// frame count, expires_at, first chunk (1/0), keys to remember, count frames
/// (1/0), write-back key, max_session_frame_bytes, then one (append key, frame
/// id, encoded frame) triple per frame, oldest first.
///
/// A session that is missing or expired is created from the arguments (Redis lost
/// it: restart without persistence), unless a tombstone covers its `created`
/// (`DELETED`: deleted stays deleted, whichever instance deleted it, whether or
/// not Redis held it then, however late this call arrives). A session created
/// anew on the id after the delete (a later `created`) is written back. A live one keeps its fields unless the write-
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
  if covered(KEYS[3], tonumber(ARGV[10])) then return {'DELETED'} end
  redis.call('UNLINK', KEYS[1], KEYS[2])
  redis.call('HSET', KEYS[1], 'created', ARGV[10], 'last', ARGV[11], 'rev', ARGV[7],
    'fc', ARGV[12], 'lfid', '0-0', 'v', ARGV[5], 'wb', ARGV[17], unpack((body_fields(ARGV[9]))))
  outcome = 'RECREATED'
  exp = 0
elseif ARGV[14] == '1' and ARGV[8] == '1' then
  local rev = tonumber(redis.call('HGET', KEYS[1], 'rev'))
  if rev == nil then return {'CORRUPT', 'rev'} end
  local repeated = rev == tonumber(ARGV[7]) and redis.call('HGET', KEYS[1], 'wb') == ARGV[17]
  if rev == tonumber(ARGV[6]) or repeated then
    local body, n = body_fields(ARGV[9])
    redis.call('HSET', KEYS[1], 'rev', ARGV[7], 'wb', ARGV[17], unpack(body))
    drop_chunks(KEYS[1], n, tonumber(redis.call('HGET', KEYS[1], 'bn')) or 1)
  else
    conflict = string.format('%d', rev)
  end
end
local f = redis.call('HMGET', KEYS[1], 'lfid', 'rk', 'last', 'fb', 'tid', 'kn')
local fb = tonumber(f[4]) or 0
local tid = f[5] or '0-0'
local last_ms, last_seq = parse_id(f[1] or '0-0')
if last_ms == nil or last_seq == nil then return {'CORRUPT', 'lfid'} end
local top_ms, top_seq = last_ms, last_seq
local rk, rk_chunks = joined(KEYS[1], 'k', f[2], f[6])
local added, skipped, interleaved = 0, 0, 0
local ids = {}
for i = 19, #ARGV, 3 do
  local key, wanted, body = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local ms, seq = parse_id(wanted)
  if ms == nil or seq == nil then return {'CORRUPT', 'frame id ' .. wanted} end
  if ms > top_ms or (ms == top_ms and seq > top_seq) then top_ms, top_seq = ms, seq end
  local stored = recalled(rk, key)
  local moved = false
  if #redis.call('XRANGE', KEYS[2], wanted, wanted) > 0 then
    stored = wanted
  elseif stored ~= nil then
    local old = redis.call('XRANGE', KEYS[2], stored, stored)
    if #old > 0 then fb = fb - entry_bytes(old[1]) end
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
    local removed
    fb, removed = trim_frames(KEYS[2], tonumber(ARGV[4]), tonumber(ARGV[18]), fb + #body, #body)
    if removed ~= nil then tid = removed end
    rk = remember(rk, key, stored, tonumber(ARGV[15]))
    if moved then skipped = skipped + 1 else added = added + 1 end
  end
  table.insert(ids, stored)
end
local last = tonumber(f[3]) or 0
if tonumber(ARGV[11]) > last then last = tonumber(ARGV[11]) end
if outcome == 'MERGED' and ARGV[16] == '1' then redis.call('HINCRBY', KEYS[1], 'fc', added) end
local fields = keys_fields(KEYS[1], rk, rk_chunks)
for _, v in ipairs({'last', string.format('%d', last), 'lfid', string.format('%d-%d', top_ms, top_seq),
    'fb', string.format('%d', fb), 'tid', tid}) do
  fields[#fields + 1] = v
end
redis.call('HSET', KEYS[1], unpack(fields))
local new_exp = tonumber(ARGV[13])
if exp > new_exp then new_exp = exp end
new_exp = string.format('%d', new_exp)
redis.call('PEXPIREAT', KEYS[1], new_exp)
redis.call('PEXPIREAT', KEYS[2], new_exp)
return {outcome, conflict, added, skipped, interleaved, new_exp, ids}
"#;

/// Conditional put of a small keyed value (a hash: `v` value, `rev` revision,
/// `exp` logical expiry in ms of the store's clock; `PEXPIREAT exp` removes it
/// physically). KEYS: the value's key. ARGV: now, value, ttl ms, condition
/// (`absent`, `any` or `rev`), expected revision (compared as text, so no Lua
/// float rounding). Replies `STORED rev exp` or `REJECTED [v rev exp]`.
const KV_PUT: &str = r#"
local now = tonumber(ARGV[1])
local f = redis.call('HMGET', KEYS[1], 'v', 'rev', 'exp')
local prev = nil
if f[2] then
  prev = tonumber(f[2])
  if prev == nil then return {'CORRUPT', 'rev'} end
end
local exp = tonumber(f[3])
local is_live = prev ~= nil and exp ~= nil and exp > now
local cond = ARGV[4]
if (cond == 'absent' and is_live) or (cond == 'rev' and ((not is_live) or f[2] ~= ARGV[5])) then
  if is_live then return {'REJECTED', f[1], f[2], f[3]} end
  return {'REJECTED'}
end
local rev
if is_live then
  rev = prev + 1
else
  rev = now * 1000
  if prev ~= nil and prev + 1 > rev then rev = prev + 1 end
  if rev < 1 then rev = 1 end
end
local rev_text = string.format('%d', rev)
local exp_text = string.format('%d', now + tonumber(ARGV[3]))
redis.call('HSET', KEYS[1], 'v', ARGV[2], 'rev', rev_text, 'exp', exp_text)
redis.call('PEXPIREAT', KEYS[1], exp_text)
return {'STORED', rev_text, exp_text}
"#;

/// Conditional delete of a small keyed value. KEYS: the value's key. ARGV: now,
/// condition (`absent`, `any` or `rev`), expected revision. Replies 1 when a live
/// value was removed, else 0. The hash is kept, expired (`exp` = now), until its
/// own `PEXPIREAT`, so a value written after it continues its revisions.
const KV_DELETE: &str = r#"
local now = tonumber(ARGV[1])
local f = redis.call('HMGET', KEYS[1], 'rev', 'exp')
local exp = tonumber(f[2])
if (not f[1]) or exp == nil or exp <= now then return 0 end
if ARGV[2] == 'absent' then return 0 end
if ARGV[2] == 'rev' and f[1] ~= ARGV[3] then return 0 end
redis.call('HSET', KEYS[1], 'exp', ARGV[1])
return 1
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
            script: Script::from_lua(format!(
                "{LIVE}{BODY}{APPEND_KEYS}{TOMBSTONE}{FRAME_BUDGET}{body}"
            )),
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
    pub(crate) delete: StoreScript,
    pub(crate) reap: StoreScript,
    pub(crate) probe: StoreScript,
    pub(crate) get: StoreScript,
    pub(crate) touch: StoreScript,
    pub(crate) delete_frames: StoreScript,
    pub(crate) read_page: StoreScript,
    pub(crate) kv_put: StoreScript,
    pub(crate) kv_delete: StoreScript,
}

impl Scripts {
    pub(crate) fn new() -> Self {
        Scripts {
            create: StoreScript::new("create", CREATE),
            update: StoreScript::new("update", UPDATE),
            append: StoreScript::new("append", APPEND),
            restore: StoreScript::new("restore", RESTORE),
            delete: StoreScript::new("delete", DELETE),
            reap: StoreScript::new("reap", REAP),
            probe: StoreScript::new("probe", PROBE),
            get: StoreScript::new("get", GET),
            touch: StoreScript::new("touch", TOUCH),
            delete_frames: StoreScript::new("delete_frames", DELETE_FRAMES),
            read_page: StoreScript::new("read_page", READ_PAGE),
            kv_put: StoreScript::new("kv_put", KV_PUT),
            kv_delete: StoreScript::new("kv_delete", KV_DELETE),
        }
    }

    pub(crate) fn all(&self) -> [&StoreScript; 13] {
        [
            &self.create,
            &self.update,
            &self.append,
            &self.restore,
            &self.delete,
            &self.reap,
            &self.probe,
            &self.get,
            &self.touch,
            &self.delete_frames,
            &self.read_page,
            &self.kv_put,
            &self.kv_delete,
        ]
    }
}
